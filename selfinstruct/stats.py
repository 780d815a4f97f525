"""A run's figures beside the paper's: Table 1 (the statistics of a set of tasks) and Table 2
(their quality, as a reviewer and a judge found it).

Every run prints Table 1 beside the paper's figures, and writes it into its manifest and report,
so a broken stage (no classification tasks, no inputs, empty outputs) shows in the numbers. Table
2 goes into the report and the dataset card once a run is reviewed or audited.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from selfinstruct.judge import judge_labels
from selfinstruct.quality import (
    PAPER_SAMPLE,
    PAPER_TABLE2,
    QUESTION_TEXT,
    QUESTIONS,
    agreement,
    quality_table,
    read_review,
)
from selfinstruct.records import Task
from selfinstruct.rundir import RunDir


class Table1(BaseModel):
    """Counts and mean lengths in words (whitespace-split, as the paper counts them)."""

    instructions: int
    classification: int
    non_classification: int
    instances: int
    instances_empty_input: int
    mean_words_instruction: float
    mean_words_input: float  # over non-empty inputs
    mean_words_output: float

    @property
    def classification_share(self) -> float:
        return self.classification / self.instructions if self.instructions else 0.0

    @property
    def empty_input_share(self) -> float:
        return self.instances_empty_input / self.instances if self.instances else 0.0


# Self-Instruct (Wang et al., 2023), Table 1: the GPT-3 run the paper released.
PAPER_TABLE1 = Table1(
    instructions=52_445,
    classification=11_584,
    non_classification=40_861,
    instances=82_439,
    instances_empty_input=35_878,
    mean_words_instruction=15.9,
    mean_words_input=12.7,
    mean_words_output=18.9,
)

ROWS: tuple[tuple[str, str], ...] = (
    ("instructions", "instructions"),
    ("classification", "  classification"),
    ("non_classification", "  non-classification"),
    ("instances", "instances"),
    ("instances_empty_input", "  with empty input"),
    ("mean_words_instruction", "mean words: instruction"),
    ("mean_words_input", "mean words: non-empty input"),
    ("mean_words_output", "mean words: output"),
)


def _mean(values: list[int]) -> float:
    return round(sum(values) / len(values), 1) if values else 0.0


def table1(tasks: Iterable[Task]) -> Table1:
    tasks = list(tasks)
    instances = [inst for task in tasks for inst in task.instances]
    n_cls = sum(1 for t in tasks if t.is_classification)
    return Table1(
        instructions=len(tasks),
        classification=n_cls,
        non_classification=len(tasks) - n_cls,
        instances=len(instances),
        instances_empty_input=sum(1 for i in instances if not i.input.strip()),
        mean_words_instruction=_mean([len(t.instruction.split()) for t in tasks]),
        mean_words_input=_mean([len(i.input.split()) for i in instances if i.input.strip()]),
        mean_words_output=_mean([len(i.output.split()) for i in instances]),
    )


def _cell(table: Table1, key: str) -> str:
    value = getattr(table, key)
    if isinstance(value, float):
        return f"{value:.1f}"
    whole = {"classification": table.instructions, "non_classification": table.instructions}
    whole["instances_empty_input"] = table.instances
    if whole.get(key):
        return f"{value:,} ({100 * value / whole[key]:.0f}%)"
    return f"{value:,}"


def table1_rows(ours: Table1, paper: Table1 = PAPER_TABLE1) -> list[tuple[str, str, str]]:
    """(label, this run, the paper) for printing; counts carry their share in brackets."""
    return [(label, _cell(ours, key), _cell(paper, key)) for key, label in ROWS]


def table1_markdown(ours: Table1, title: str = "this run") -> str:
    lines = [f"| statistic | {title} | paper (GPT-3) |", "|---|---:|---:|"]
    lines += [f"| {label.strip()} | {a} | {b} |" for label, a, b in table1_rows(ours)]
    return "\n".join(lines)


# -- Table 2, for the report and the dataset card -------------------------------------------


@dataclass
class QualityFigures:
    """Table 2 for a run: the paper's column, then the review's and the judge's, if any."""

    header: list[str]
    rows: list[list[str]]
    labelled: bool  # a review or an audit has answered something
    dropped: int
    edited: int


def quality_figures(gen: Path, task_ids: set[str]) -> QualityFigures:
    state = read_review(RunDir(gen).review)
    # The page always records its sample; labels written some other way count on their own.
    recorded = state.sample.task_ids if state.sample else [i for i, a in state.answers.items() if a]
    sample = [i for i in recorded if i in task_ids]
    human = quality_table(state.answers, sample) if sample else None
    judge, verdicts = judge_labels(gen)
    verdicts = {i: v for i, v in verdicts.items() if i in task_ids}
    judged = quality_table(verdicts, list(verdicts)) if verdicts else None
    agree = agreement(state.answers, verdicts) if state.answers and verdicts else None
    header = ["question", f"paper (GPT-3, {PAPER_SAMPLE} tasks)"]
    if human:
        header.append(f"human review ({human.labelled} of {len(sample)} labelled)")
    if judged:
        header.append(f"judge: {judge} ({judged.labelled} tasks)")
    if agree:
        header.append("agreement (Cohen's kappa)")
    rows = []
    for key in (*QUESTIONS, "all"):
        cells = [QUESTION_TEXT.get(key, "All fields are valid"), f"{PAPER_TABLE2[key]:.0%}"]
        if human:
            cells.append(human.rows[key].text())
        if judged:
            cells.append(judged.rows[key].text())
        if agree:
            a = agree[key]
            kappa = "n/a" if a.kappa is None else f"{a.kappa:.2f}"
            cells.append("-" if a.agree is None else f"{a.agree:.0%} (kappa {kappa}, n={a.n})")
        rows.append(cells)
    return QualityFigures(
        header=header,
        rows=rows,
        labelled=bool(human or judged),
        dropped=len(state.dropped & task_ids),
        edited=len(state.edited_tasks() & task_ids),
    )


QUALITY_NOTE = (
    "Share answered yes, with a 95% Wilson interval and the number of tasks answered. The paper "
    'judged one instance per task; here a task is judged with all its instances, so "correct '
    'output" asks more of a task with several.'
)
