"""Tasks → instruction-tuning examples, in the formats trainers and services read.

Each instance becomes one example, at most `max_per_task` per task (the paper keeps 5), and an
example identical to an earlier one (same instruction, input and output, or the same prompt and
response) is written once. The instruction and input are joined with one of several
templates, chosen per example by a seeded RNG: the paper varies the format so that the model
learns to follow instructions, not one layout. Formats: `alpaca` (JSON list of
instruction/input/output), `messages` (chat JSONL, the OpenAI fine-tuning and TRL
conversational shape), `prompt-completion` (TRL's conversational prompt/completion JSONL, so the
loss falls on the response only), `sharegpt` (JSONL with `conversations`), and `hf` (a Hugging
Face `datasets` directory of prompt/completion rows).
"""

from __future__ import annotations

import json
import random
import shutil
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from selfinstruct.atomic import write_text_atomic
from selfinstruct.card import MARKER, card_path, render_card
from selfinstruct.config import ExportConfig
from selfinstruct.errors import InputError, SelfInstructError
from selfinstruct.manifest import RunManifest
from selfinstruct.quality import apply_review, read_review
from selfinstruct.records import Task, read_tasks, write_jsonl
from selfinstruct.rundir import RunDir

# How an instruction and its input are put together; {input} is left out when it is empty.
WITH_INPUT = (
    "{instruction}\n\n{input}",
    "{instruction}\n\nInput: {input}",
    "Task: {instruction}\nInput: {input}",
    "{instruction}\n{input}",
    "Instruction: {instruction}\n\nInput:\n{input}",
)
WITHOUT_INPUT = (
    "{instruction}",
    "Task: {instruction}",
    "Instruction: {instruction}",
)


class Example(BaseModel):
    """One training example: what the user says and what the model should answer."""

    model_config = ConfigDict(extra="forbid")

    prompt: str
    response: str
    instruction: str
    input: str = ""
    task_id: str


class ExportSummary(BaseModel):
    """What was written, and what was left out and why."""

    examples: int
    tasks: int
    seed_tasks: int = 0
    dropped: dict[str, int] = Field(default_factory=dict)  # duplicate, over_cap
    review_dropped: int = 0  # tasks left out because the reviewer dropped them
    review_edited: int = 0  # tasks written with the reviewer's corrections
    card_path: str | None = None
    hub_url: str | None = None


@dataclass
class Source:
    tasks: list[Task]
    review_dropped: int = 0  # tasks the reviewer dropped (review.jsonl)
    review_edited: int = 0  # tasks with an input or output the reviewer corrected


def load_source(source: Path) -> Source:
    """Tasks from an instruction file, or from a run directory with its review applied."""
    if not source.is_dir():
        return Source(read_tasks(source))
    files = RunDir(source)
    path = files.tasks
    if not path.exists():
        raise InputError(
            source, "is a directory without tasks.jsonl; give a run directory or a file"
        )
    tasks = read_tasks(path)
    review = files.review
    if not review.exists():
        return Source(tasks)
    kept, dropped, edited = apply_review(tasks, read_review(review))
    return Source(kept, dropped, edited)


def source_tasks(source: Path) -> list[Task]:
    return load_source(source).tasks


@dataclass
class Examples:
    examples: list[Example]
    dropped: Counter[str]


def to_examples(tasks: Iterable[Task], seed: int, max_per_task: int | None) -> Examples:
    """One example per instance (up to `max_per_task` per task), duplicates written once."""
    rng = random.Random(seed)
    examples: list[Example] = []
    dropped: Counter[str] = Counter()
    seen_records: set[tuple[str, str, str]] = set()
    seen_pairs: set[tuple[str, str]] = set()
    for task in tasks:
        used = 0
        for inst in task.instances:
            record = (task.instruction.strip(), inst.input.strip(), inst.output.strip())
            if record in seen_records:
                dropped["duplicate"] += 1
                continue
            if max_per_task is not None and used >= max_per_task:
                dropped["over_cap"] += 1
                continue
            template = rng.choice(WITH_INPUT if record[1] else WITHOUT_INPUT)
            prompt = template.format(instruction=record[0], input=record[1])
            if (prompt, record[2]) in seen_pairs:
                dropped["duplicate"] += 1
                continue
            seen_records.add(record)
            seen_pairs.add((prompt, record[2]))
            used += 1
            examples.append(
                Example(
                    prompt=prompt,
                    response=record[2],
                    instruction=task.instruction,
                    input=inst.input,
                    task_id=task.id,
                )
            )
    return Examples(examples, dropped)


def _chat(example: Example, system: str | None) -> list[dict[str, str]]:
    turns = [{"role": "system", "content": system}] if system else []
    return [*turns, {"role": "user", "content": example.prompt}]


def prompt_completion_row(example: Example, system: str | None = None) -> dict[str, Any]:
    return {
        "prompt": _chat(example, system),
        "completion": [{"role": "assistant", "content": example.response}],
    }


def _seed_tasks(cfg: ExportConfig) -> list[Task]:
    path = cfg.seed_tasks
    if path is None and cfg.source.is_dir():
        manifest = RunManifest.read(RunDir(cfg.source).manifest)
        path = manifest.seed_tasks if manifest is not None else None
    if path is None:
        raise SelfInstructError(
            f"{cfg.source}: include_seeds needs the seed file; pass --seed-tasks PATH"
        )
    return [t.model_copy(update={"source": "seed"}) for t in read_tasks(path)]


def export(cfg: ExportConfig) -> ExportSummary:
    """Write the examples of `cfg.source` to `cfg.output`; returns what was written."""
    source = load_source(cfg.source)
    tasks = source.tasks
    seeds = _seed_tasks(cfg) if cfg.include_seeds else []
    built = to_examples([*tasks, *seeds], cfg.seed, cfg.max_per_task)
    examples = built.examples
    if not examples:
        raise SelfInstructError(
            f"{cfg.source}: no task has an instance, so there is nothing to "
            "export; generate or filter more tasks first"
        )
    try:
        cfg.output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SelfInstructError(f"{cfg.output}: cannot create its folder ({exc})") from None
    card = card_path(cfg)
    if cfg.card and card.exists() and MARKER not in card.read_text(encoding="utf-8"):
        raise SelfInstructError(
            f"{card} exists and was not written by selfinstruct; export into another folder, "
            "or pass --no-card"
        )
    _write_data(cfg, examples)
    if cfg.with_journal:
        _copy_journal(cfg)
    summary = ExportSummary(
        examples=len(examples),
        tasks=len(tasks),
        seed_tasks=len(seeds),
        dropped=dict(built.dropped),
        review_dropped=source.review_dropped,
        review_edited=source.review_edited,
    )
    if cfg.card:
        reviewed = bool(source.review_dropped or source.review_edited)
        text = render_card(cfg, tasks, len(examples), summary.dropped, len(seeds), reviewed)
        write_text_atomic(card, text)
        summary.card_path = str(card)
    if cfg.push_to_hub:
        from selfinstruct.hub import push_dataset

        files = (
            {p.name: p for p in sorted(cfg.output.iterdir()) if p.is_file()}
            if cfg.format == "hf"
            else {cfg.output.name: cfg.output}
        )
        if cfg.card:
            files["README.md"] = card
        summary.hub_url = push_dataset(
            cfg.push_to_hub,
            files,
            private=not cfg.public,
            message=f"selfinstruct export: {len(examples)} examples ({cfg.format})",
        )
    return summary


def _copy_journal(cfg: ExportConfig) -> None:
    from selfinstruct.card import source_run_dir
    from selfinstruct.lineage import JOURNAL_FILE

    run = source_run_dir(cfg.source)
    if run is None or not RunDir(run).requests.exists():
        raise SelfInstructError(
            f"{cfg.source}: --with-journal needs a generate run (its requests.jsonl); this "
            "source has none"
        )
    folder = cfg.output if cfg.format == "hf" else cfg.output.parent
    shutil.copyfile(RunDir(run).requests, folder / JOURNAL_FILE)


def _write_data(cfg: ExportConfig, examples: list[Example]) -> None:
    if cfg.format == "alpaca":
        rows = [
            {"instruction": e.instruction, "input": e.input, "output": e.response} for e in examples
        ]
        write_text_atomic(cfg.output, json.dumps(rows, ensure_ascii=False, indent=1) + "\n")
    elif cfg.format == "messages":
        write_jsonl(
            cfg.output,
            (
                {"messages": [*_chat(e, cfg.system), {"role": "assistant", "content": e.response}]}
                for e in examples
            ),
        )
    elif cfg.format == "prompt-completion":
        write_jsonl(cfg.output, (prompt_completion_row(e, cfg.system) for e in examples))
    elif cfg.format == "sharegpt":
        write_jsonl(
            cfg.output,
            (
                {
                    "conversations": [
                        *([{"from": "system", "value": cfg.system}] if cfg.system else []),
                        {"from": "human", "value": e.prompt},
                        {"from": "gpt", "value": e.response},
                    ]
                }
                for e in examples
            ),
        )
    else:
        try:
            from datasets import Dataset
        except ImportError:
            raise SelfInstructError(
                "the hf format needs datasets: pip install 'selfinstruct[finetune]'"
            ) from None
        Dataset.from_list([prompt_completion_row(e, cfg.system) for e in examples]).save_to_disk(
            str(cfg.output)
        )
