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

import hashlib
import json
import re
from collections.abc import Callable
from concurrent.futures import Future, as_completed
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from selfinstruct.atomic import write_json_atomic
from selfinstruct.backends.base import Completion, SamplingParams
from selfinstruct.config import PROMPTS_DIR, AuditConfig
from selfinstruct.errors import BackendError, SelfInstructError
from selfinstruct.quality import (
    QUESTIONS,
    REVIEW_FILE,
    Agreement,
    Labels,
    QualityTable,
    agreement,
    choose_sample,
    quality_table,
    read_review,
)
from selfinstruct.records import Rejected, Task, write_jsonl
from selfinstruct.store import EventLog, RunStore, acquire_lock, generate_dir

AUDIT_FILE = "audit.jsonl"
AUDIT_SUMMARY = "audit_summary.json"
TEMPLATE = PROMPTS_DIR / "audit.txt"
_QUESTION_NAMES = {
    "valid_task": r"valid[ _]?task",
    "input_ok": r"input[ _]?ok|appropriate input|input",
    "output_ok": r"output[ _]?ok|correct output|output",
}


def render_audit(task: Task, template: str) -> str:
    blocks = []
    for i, inst in enumerate(task.instances, 1):
        blocks.append(
            f"Instance {i}\nInput: {inst.input.strip() or '(empty)'}\nOutput: {inst.output.strip()}"
        )
    return template.format(
        instruction=task.instruction.strip(),
        instances="\n\n".join(blocks) or "(no instances)",
    ).rstrip("\n")


def parse_verdict(text: str) -> dict[str, str | None]:
    """yes/no per question from a judge's reply; None where the reply does not say. Takes the
    format asked for, markdown around it, "1. yes" lists, or three bare yes/no words."""
    answers: dict[str, str | None] = dict.fromkeys(QUESTIONS)
    for q in QUESTIONS:
        match = re.search(rf"(?i)\b(?:{_QUESTION_NAMES[q]})\W{{0,8}}?\b(yes|no)\b", text)
        if match:
            answers[q] = match.group(1).lower()
    if all(v is None for v in answers.values()):
        numbered = re.findall(r"(?im)^\W*([123])[.):]\W*(yes|no)\b", text)
        if numbered:
            for number, value in numbered:
                answers[QUESTIONS[int(number) - 1]] = value.lower()
        else:
            words = re.findall(r"(?i)\b(yes|no)\b", text)
            if len(words) == 3:
                answers = {q: w.lower() for q, w in zip(QUESTIONS, words, strict=True)}
    return answers


class Verdict(BaseModel):
    """One line of audit.jsonl."""

    task_id: str
    judge: str
    prompt_sha: str
    answers: dict[str, str | None]
    text: str
    finish_reason: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    at: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat())


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


def judge_labels(
    run: Path, judge: str | None = None
) -> tuple[str | None, dict[str, dict[str, str]]]:
    """The latest verdict per task of `judge` (default: the judge of the last audit)."""
    gen = generate_dir(run)
    if judge is None:
        summary = gen / AUDIT_SUMMARY
        if not summary.exists():
            return None, {}
        judge = json.loads(summary.read_text(encoding="utf-8"))["judge"]
    labels: Labels = {}
    for verdict in _read_journal(gen / AUDIT_FILE):
        if verdict.judge == judge:
            labels[verdict.task_id] = {k: v for k, v in verdict.answers.items() if v is not None}
    return judge, labels


def _read_journal(path: Path) -> list[Verdict]:
    return EventLog.read(path, Verdict.model_validate, "an audit verdict")


def run_audit(
    cfg: AuditConfig,
    backend: Any | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> AuditSummary:
    from selfinstruct.backends import open_backend

    gen = generate_dir(cfg.run)
    tasks = RunStore(gen).tasks()
    if not tasks:
        raise SelfInstructError(f"{gen}: no accepted tasks to audit")
    by_id = {t.id: t for t in tasks}
    targets = (
        [t.id for t in tasks] if cfg.drop_invalid else choose_sample(tasks, cfg.size, cfg.seed)
    )
    template = TEMPLATE.read_text(encoding="utf-8")
    prompts = {i: render_audit(by_id[i], template) for i in targets}
    lock = acquire_lock(gen / "audit.lock", "an audit of this run is running ({holder})")
    own = backend is None
    try:
        backend = backend or open_backend(
            cfg.judge_backend,
            cfg.judge_model,
            chat=True,
            base_url=cfg.judge_base_url,
            api_key_env=cfg.api_key_env,
            concurrency=cfg.concurrency,
        )
        judge = f"{cfg.judge_backend}/{getattr(backend, 'model', cfg.judge_model)}"
        journal_path = gen / AUDIT_FILE
        done: dict[str, Verdict] = {}
        for verdict in _read_journal(journal_path):
            prompt = prompts.get(verdict.task_id)
            if verdict.judge == judge and prompt is not None and verdict.prompt_sha == _sha(prompt):
                done[verdict.task_id] = verdict
        reused = len(done)
        pending = [i for i in targets if i not in done]
        params = SamplingParams(temperature=0.0, top_p=1.0, max_tokens=cfg.max_tokens)
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
                    prompt_sha=_sha(prompts[task_id]),
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
    review = gen / REVIEW_FILE
    human = read_review(review).answers if review.exists() else {}
    prompt_tokens = sum(d.prompt_tokens for d in done.values())
    completion_tokens = sum(d.completion_tokens for d in done.values())
    price = cfg.prices.get(judge.split("/", 1)[1])
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
        cost_usd=(prompt_tokens * price[0] + completion_tokens * price[1]) / 1e6 if price else None,
    )
    if cfg.drop_invalid:
        summary = _write_filtered(cfg, gen, tasks, done, summary)
    write_json_atomic(gen / AUDIT_SUMMARY, summary.model_dump(mode="json"))
    return summary


def _write_filtered(
    cfg: AuditConfig, gen: Path, tasks: list[Task], done: dict[str, Verdict], summary: AuditSummary
) -> AuditSummary:
    """Tasks judged valid in every field (and those without a full verdict: not judged is not
    invalid) to the output file; the rest to audit_rejected.jsonl."""
    kept: list[Task] = []
    rejected: list[Rejected] = []
    for task in tasks:
        verdict = done.get(task.id)
        if verdict is not None and any(v == "no" for v in verdict.answers.values()):
            rejected.append(
                Rejected(
                    stage="audit",
                    reason="judge_invalid",
                    text=task.instruction,
                    id=task.id,
                    detail={"judge": verdict.judge, "answers": verdict.answers},
                )
            )
        else:
            kept.append(task)
    output = cfg.output or gen / "tasks.audited.jsonl"
    write_jsonl(output, kept)
    write_jsonl(gen / "audit_rejected.jsonl", rejected)
    return summary.model_copy(
        update={"output": str(output), "kept": len(kept), "dropped": len(rejected)}
    )


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
