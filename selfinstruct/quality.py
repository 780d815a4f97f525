"""The paper's quality questions (its Table 2), answered by people (`review`) or a judge (`audit`).

The paper sampled 200 generated tasks and asked of each: does the instruction describe a valid
task, is the input appropriate, is the output correct; 92%, 79% and 58% were, and 54% were valid
in every field. A task here is judged as a whole, every instance shown (the paper showed one
instance per task), so "correct output" means every output: stricter when a task has several.

`review.jsonl` is the reviewer's journal, one event per line, appended the moment an answer,
edit or drop is made; folding it (the last word on each thing wins) gives the labels, the edits
and the drops, which `export` and `finetune` apply to a run's tasks.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from selfinstruct.records import Instance, Task
from selfinstruct.store import EventLog

Question = Literal["valid_task", "input_ok", "output_ok"]
QUESTIONS: tuple[Question, ...] = ("valid_task", "input_ok", "output_ok")
QUESTION_TEXT: dict[str, str] = {
    "valid_task": "Does the instruction describe a valid task?",
    "input_ok": "Is the input appropriate for the instruction?",
    "output_ok": "Is the output a correct and acceptable response to the instruction and input?",
}
# Table 2 of the paper: 200 GPT-3 tasks, judged by an expert author.
PAPER_TABLE2: dict[str, float] = {
    "valid_task": 0.92,
    "input_ok": 0.79,
    "output_ok": 0.58,
    "all": 0.54,
}
PAPER_SAMPLE = 200
Answer = Literal["yes", "no"]
Labels = dict[str, dict[str, str]]  # task id -> question -> "yes" / "no"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid")
    at: str = Field(default_factory=_now)


class SampleEvent(_Event):
    """The tasks under review, in review order (so a grown run keeps the same sample)."""

    kind: Literal["sample"] = "sample"
    seed: int
    size: int
    task_ids: list[str]


class AnswerEvent(_Event):
    kind: Literal["answer"] = "answer"
    task_id: str
    question: Question
    value: Answer | None  # None takes an answer back


class EditEvent(_Event):
    kind: Literal["edit"] = "edit"
    task_id: str
    instance: int = Field(ge=0)
    input: str
    output: str  # an empty output removes the instance


class DropEvent(_Event):
    kind: Literal["drop"] = "drop"
    task_id: str
    dropped: bool = True  # False restores a dropped task


ReviewEvent = Annotated[
    SampleEvent | AnswerEvent | EditEvent | DropEvent, Field(discriminator="kind")
]
EVENT = TypeAdapter(ReviewEvent)


@dataclass
class ReviewState:
    """review.jsonl folded: the last word on each answer, instance and drop."""

    sample: SampleEvent | None = None
    answers: Labels = field(default_factory=dict)
    edits: dict[tuple[str, int], tuple[str, str]] = field(default_factory=dict)
    dropped: set[str] = field(default_factory=set)
    events: int = 0

    def apply(self, event: SampleEvent | AnswerEvent | EditEvent | DropEvent) -> None:
        self.events += 1
        if isinstance(event, SampleEvent):
            self.sample = event
        elif isinstance(event, AnswerEvent):
            labels = self.answers.setdefault(event.task_id, {})
            if event.value is None:
                labels.pop(event.question, None)
            else:
                labels[event.question] = event.value
        elif isinstance(event, EditEvent):
            self.edits[(event.task_id, event.instance)] = (event.input, event.output)
        elif event.dropped:
            self.dropped.add(event.task_id)
        else:
            self.dropped.discard(event.task_id)

    def edited_tasks(self) -> set[str]:
        return {task_id for task_id, _ in self.edits}


def read_review(path: Path) -> ReviewState:
    """Fold a review journal (a line torn by a crash at the very end is ignored)."""
    state = ReviewState()
    for event in EventLog.read(path, EVENT.validate_python, "a review event"):
        state.apply(event)
    return state


def choose_sample(tasks: list[Task], size: int, seed: int) -> list[str]:
    """A seeded random sample of task ids (all of them when size is 0 or covers the run)."""
    ids = [t.id for t in tasks]
    if size <= 0 or size >= len(ids):
        order = ids[:]
        random.Random(seed).shuffle(order)
        return order
    return random.Random(seed).sample(ids, size)


def apply_review(tasks: Iterable[Task], state: ReviewState) -> tuple[list[Task], int, int]:
    """Tasks with the reviewer's edits and without the tasks they dropped: (tasks, dropped,
    edited)."""
    kept: list[Task] = []
    dropped = edited = 0
    for task in tasks:
        if task.id in state.dropped:
            dropped += 1
            continue
        changes = {i: v for (tid, i), v in state.edits.items() if tid == task.id}
        if changes:
            instances: list[Instance] = []
            for i, inst in enumerate(task.instances):
                new_input, new_output = changes.get(i, (inst.input, inst.output))
                if new_output.strip():
                    instances.append(Instance(input=new_input, output=new_output))
            task = task.model_copy(update={"instances": instances})
            edited += 1
        kept.append(task)
    return kept, dropped, edited


# -- statistics -------------------------------------------------------------------------------


class Proportion(BaseModel):
    """yes out of n, with a Wilson 95% interval (sound for small n and for shares near 0 or 1)."""

    yes: int
    n: int
    share: float | None
    low: float | None
    high: float | None

    @classmethod
    def of(cls, yes: int, n: int, z: float = 1.96) -> Proportion:
        if n == 0:
            return cls(yes=0, n=0, share=None, low=None, high=None)
        p = yes / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        return cls(yes=yes, n=n, share=p, low=max(0.0, centre - half), high=min(1.0, centre + half))

    def text(self) -> str:
        if self.share is None:
            return "-"
        return f"{self.share:.0%} [{self.low:.0%}-{self.high:.0%}] of {self.n}"


class QualityTable(BaseModel):
    """Table 2 for one labeller: each question, and "all" over tasks with all three answered."""

    labelled: int
    rows: dict[str, Proportion]


def quality_table(labels: Labels, task_ids: Iterable[str]) -> QualityTable:
    ids = list(task_ids)
    rows: dict[str, Proportion] = {}
    for q in QUESTIONS:
        answered = [labels[i][q] for i in ids if q in labels.get(i, {})]
        rows[q] = Proportion.of(sum(a == "yes" for a in answered), len(answered))
    complete = [labels[i] for i in ids if all(q in labels.get(i, {}) for q in QUESTIONS)]
    rows["all"] = Proportion.of(
        sum(all(c[q] == "yes" for q in QUESTIONS) for c in complete), len(complete)
    )
    labelled = sum(1 for i in ids if labels.get(i))
    return QualityTable(labelled=labelled, rows=rows)


class Agreement(BaseModel):
    n: int
    agree: float | None
    kappa: float | None  # Cohen's; None when undefined (both always said the same one thing)


def cohen_kappa(pairs: list[tuple[str, str]]) -> Agreement:
    n = len(pairs)
    if n == 0:
        return Agreement(n=0, agree=None, kappa=None)
    observed = sum(a == b for a, b in pairs) / n
    expected = sum(
        (sum(a == v for a, _ in pairs) / n) * (sum(b == v for _, b in pairs) / n)
        for v in ("yes", "no")
    )
    kappa = None if expected >= 1.0 else (observed - expected) / (1.0 - expected)
    return Agreement(n=n, agree=observed, kappa=kappa)


def agreement(human: Labels, judge: Labels) -> dict[str, Agreement]:
    """Per question (and "all": valid in every field), on the tasks both answered."""
    out: dict[str, Agreement] = {}
    for q in QUESTIONS:
        pairs = [(h[q], judge[t][q]) for t, h in human.items() if q in h and q in judge.get(t, {})]
        out[q] = cohen_kappa(pairs)
    both = [
        t
        for t, h in human.items()
        if all(q in h for q in QUESTIONS) and all(q in judge.get(t, {}) for q in QUESTIONS)
    ]

    def verdict(labels: dict[str, str]) -> str:
        return "yes" if all(labels[q] == "yes" for q in QUESTIONS) else "no"

    out["all"] = cohen_kappa([(verdict(human[t]), verdict(judge[t])) for t in both])
    return out
