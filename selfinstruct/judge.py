"""The LLM judge, one for every command that asks one: its prompts (`data/prompts/audit.txt`,
`data/prompts/eval_judge.txt`), its backend, and what it said.

`audit` asks it the paper's three quality questions about a task; `eval` asks it to grade a
response A-D. Both open the judge the same way (`open_judge`), fill a prompt file shipped with
the package (`judge_prompt`), and read the answer with a parser that never raises: an answer it
cannot read is counted, not guessed. The audit's verdicts are journaled (`Verdict`, the run's
`audit.jsonl`), each with its prompt's hash, so a killed audit resumes without asking twice.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path

from pydantic import BaseModel, Field

from selfinstruct.backends.base import Backend, SamplingParams
from selfinstruct.config import PROMPTS_DIR, BackendOptions, JudgeOptions, ServerOptions
from selfinstruct.quality import QUESTIONS, Labels
from selfinstruct.records import Task
from selfinstruct.rundir import RunDir
from selfinstruct.store import EventLog


def open_judge(judge: JudgeOptions, server: ServerOptions | None = None) -> Backend:
    """The judge's backend: `judge` says which, `server` how an OpenAI-compatible one is asked
    (the defaults without one)."""
    from selfinstruct.backends import open_backend

    assert judge.backend is not None
    asked = {name: getattr(server, name) for name in ServerOptions.model_fields} if server else {}
    options = BackendOptions(base_url=judge.base_url, **asked)
    return open_backend(judge.backend, judge.model, chat=True, options=options)


def judge_name(judge: JudgeOptions, backend: Backend) -> str:
    """ "backend/model": verdicts of another judge are never taken for this one's."""
    return f"{judge.backend}/{getattr(backend, 'model', judge.model)}"


def judge_prompt(name: str, **values: str) -> str:
    """A judge prompt shipped with the package, filled."""
    return (PROMPTS_DIR / f"{name}.txt").read_text(encoding="utf-8").format(**values).rstrip("\n")


def greedy(max_tokens: int) -> SamplingParams:
    """A judge answers greedily: the same question gets the same verdict."""
    return SamplingParams(temperature=0.0, top_p=1.0, max_tokens=max_tokens)


# -- the audit's three questions -----------------------------------------------------------

_QUESTION_NAMES = {
    "valid_task": r"valid[ _]?task",
    "input_ok": r"input[ _]?ok|appropriate input|input",
    "output_ok": r"output[ _]?ok|correct output|output",
}


def audit_prompt(task: Task) -> str:
    blocks = []
    for i, inst in enumerate(task.instances, 1):
        blocks.append(
            f"Instance {i}\nInput: {inst.input.strip() or '(empty)'}\nOutput: {inst.output.strip()}"
        )
    return judge_prompt(
        "audit",
        instruction=task.instruction.strip(),
        instances="\n\n".join(blocks) or "(no instances)",
    )


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


def read_verdicts(path: Path) -> list[Verdict]:
    return EventLog.read(path, Verdict.model_validate, "an audit verdict")


def judge_labels(run: Path, judge: str | None = None) -> tuple[str | None, Labels]:
    """The latest verdict per task of `judge` (default: the judge of the last audit)."""
    files = RunDir.find(run)
    if judge is None:
        if not files.audit_summary.exists():
            return None, {}
        judge = json.loads(files.audit_summary.read_text(encoding="utf-8"))["judge"]
    labels: Labels = {}
    for verdict in read_verdicts(files.audit):
        if verdict.judge == judge:
            labels[verdict.task_id] = {k: v for k, v in verdict.answers.items() if v is not None}
    return judge, labels


# -- eval's grade ----------------------------------------------------------------------------


def grade_prompt(instruction: str, given: str, reference: str, response: str) -> str:
    return judge_prompt(
        "eval_judge",
        instruction=instruction,
        input=given or "(none)",
        reference=reference,
        response=response,
    )


def grade_letter(text: str) -> str | None:
    """A-D from a judge's reply, or None when it gives none."""
    match = re.search(r"\b([ABCD])\b", text.strip())
    return match.group(1) if match else None
