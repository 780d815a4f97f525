"""The paper's Table 2 for a run: the data's quality, as a reviewer and an LLM judge found it,
beside the paper's own figures. The report and the dataset card show it once a run is reviewed
(`selfinstruct review`) or audited (`selfinstruct audit`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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
from selfinstruct.rundir import RunDir


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
