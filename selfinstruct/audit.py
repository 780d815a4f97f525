"""`selfinstruct audit RUN`: the paper's three quality questions asked of an LLM judge.

Each verdict is appended to RUN/audit.jsonl as it arrives (the judge, the prompt's hash, the
raw reply and its parse), so a killed audit resumes where it stopped and never asks twice; a
different judge or prompt is asked afresh beside the old verdicts. The parser never raises: a
reply it cannot read leaves that question unanswered and is counted. Where the review page has
human labels for the same tasks, the summary gives the agreement per question and Cohen's kappa.
With `--drop-invalid` the judge acts as a filter: every task is judged and those valid in every
field are written to a task file ready for `export`; the ones dropped go to
RUN/audit_rejected.jsonl with the judge's answers.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, as_completed
from typing import Any

from pydantic import BaseModel

from selfinstruct.accounting import cost_usd, prompt_sha
from selfinstruct.atomic import write_json_atomic
from selfinstruct.backends.base import Completion
from selfinstruct.config import AuditConfig
from selfinstruct.errors import BackendError, SelfInstructError
from selfinstruct.judge import (
    Verdict,
    audit_prompt,
    greedy,
    judge_name,
    open_judge,
    parse_verdict,
    read_verdicts,
)
from selfinstruct.quality import (
    Agreement,
    QualityTable,
    agreement,
    choose_sample,
    quality_table,
    read_review,
)
from selfinstruct.records import Rejected, Task, write_jsonl
from selfinstruct.rundir import RunDir
from selfinstruct.store import EventLog, RunStore, acquire_lock


class AuditSummary(BaseModel):
    run: str
    judge: str
    tasks: int  # tasks the audit covers (the sample, or all)
    judged: int  # with a verdict from this judge and prompt
    asked: int  # requests sent by this invocation
    reused: int  # verdicts found in the journal
    unparsed: int  # verdicts with a question the parser could not read
    failed: int  # requests that came back as errors (asked again next time)
    table: QualityTable
    agreement: dict[str, Agreement] | None  # with the human review, where there is one
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None
    output: str | None = None
    kept: int | None = None
    dropped: int | None = None


def run_audit(
    cfg: AuditConfig,
    backend: Any | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> AuditSummary:

    files = RunDir.find(cfg.run)
    gen = files.path
    tasks = RunStore(gen).tasks()
    if not tasks:
        raise SelfInstructError(f"{gen}: no accepted tasks to audit")
    by_id = {t.id: t for t in tasks}
    targets = (
        [t.id for t in tasks] if cfg.drop_invalid else choose_sample(tasks, cfg.size, cfg.seed)
    )
    prompts = {i: audit_prompt(by_id[i]) for i in targets}
    lock = acquire_lock(files.audit_lock, "an audit of this run is running ({holder})")
    own = backend is None
    try:
        backend = backend or open_judge(cfg.judge, cfg)
        judge = judge_name(cfg.judge, backend)
        journal_path = files.audit
        done: dict[str, Verdict] = {}
        for verdict in read_verdicts(journal_path):
            prompt = prompts.get(verdict.task_id)
            if (
                verdict.judge == judge
                and prompt is not None
                and verdict.prompt_sha == prompt_sha(prompt)
            ):
                done[verdict.task_id] = verdict
        reused = len(done)
        pending = [i for i in targets if i not in done]
        params = greedy(cfg.max_tokens)
        failed = 0
        with EventLog(journal_path) as journal:
            futures: dict[Future[Completion], str] = {
                backend.submit(f"audit-{i}", [{"role": "user", "content": prompts[i]}], params): i
                for i in pending
            }
            fatal: BackendError | None = None
            for count, future in enumerate(as_completed(futures), 1):
                task_id = futures[future]
                try:
                    completion = future.result()
                except BackendError as exc:  # the judge cannot serve at all: keep the rest
                    fatal = fatal or exc
                    continue
                if completion.finish_reason == "error":
                    failed += 1
                    continue
                verdict = Verdict(
                    task_id=task_id,
                    judge=judge,
                    prompt_sha=prompt_sha(prompts[task_id]),
                    answers=parse_verdict(completion.text),
                    text=completion.text,
                    finish_reason=completion.finish_reason,
                    prompt_tokens=completion.usage.prompt_tokens,
                    completion_tokens=completion.usage.completion_tokens,
                )
                journal.append(verdict)
                done[task_id] = verdict
                if on_progress:
                    on_progress(count, len(pending))
            if fatal is not None:
                raise fatal
    finally:
        if own and backend is not None:
            backend.close()
        lock.close()

    labels = {i: {k: v for k, v in d.answers.items() if v is not None} for i, d in done.items()}
    human = read_review(files.review).answers if files.review.exists() else {}
    prompt_tokens = sum(d.prompt_tokens for d in done.values())
    completion_tokens = sum(d.completion_tokens for d in done.values())
    summary = AuditSummary(
        run=str(gen),
        judge=judge,
        tasks=len(targets),
        judged=len(done),
        asked=len(pending),
        reused=reused,
        unparsed=sum(any(v is None for v in d.answers.values()) for d in done.values()),
        failed=failed,
        table=quality_table(labels, targets),
        agreement=agreement(human, labels) if human else None,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        cost_usd=cost_usd(cfg.prices, judge.split("/", 1)[1], prompt_tokens, completion_tokens),
    )
    if cfg.drop_invalid:
        summary = _write_filtered(cfg, files, tasks, done, summary)
    write_json_atomic(files.audit_summary, summary.model_dump(mode="json"))
    return summary


def _write_filtered(
    cfg: AuditConfig,
    files: RunDir,
    tasks: list[Task],
    done: dict[str, Verdict],
    summary: AuditSummary,
) -> AuditSummary:
    """Tasks judged valid in every field (and those without a full verdict: not judged is not
    invalid) to the output file; the rest to audit_rejected.jsonl."""
    kept: list[Task] = []
    rejected: list[Rejected] = []
    for task in tasks:
        verdict = done.get(task.id)
        if verdict is not None and any(v == "no" for v in verdict.answers.values()):
            rejected.append(
                Rejected.of(
                    "audit",
                    "judge_invalid",
                    task.instruction,
                    task.id,
                    judge=verdict.judge,
                    answers=verdict.answers,
                )
            )
        else:
            kept.append(task)
    output = cfg.output or files.audited_tasks
    write_jsonl(output, kept)
    write_jsonl(files.audit_rejected, rejected)
    return summary.model_copy(
        update={"output": str(output), "kept": len(kept), "dropped": len(rejected)}
    )
