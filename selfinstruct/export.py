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
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from selfinstruct.errors import InputError, SelfInstructError
from selfinstruct.records import Task, read_tasks, write_jsonl

ExportFormat = Literal["alpaca", "messages", "prompt-completion", "sharegpt", "hf"]

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


class ExportConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: Path = Field(description="a run directory (its tasks.jsonl) or any instruction file")
    output: Path
    format: ExportFormat = "messages"
    seed: int = Field(0, description="chooses the prompt template of each example")
    system: str | None = Field(None, description="a system message for chat formats")
    max_per_task: int | None = Field(
        5, ge=1, description="examples per task at most (paper: 5); None keeps every instance"
    )
    include_seeds: bool = Field(
        False, description="also export the seed tasks (paper: --include_seed_tasks)"
    )
    seed_tasks: Path | None = Field(
        None, description="seed file for include_seeds (default: the run's, from its manifest)"
    )


class ExportSummary(BaseModel):
    """What was written, and what was left out and why."""

    examples: int
    tasks: int
    seed_tasks: int = 0
    dropped: dict[str, int] = Field(default_factory=dict)  # duplicate, over_cap


def source_tasks(source: Path) -> list[Task]:
    """Tasks from a run directory or an instruction file."""
    path = source / "tasks.jsonl" if source.is_dir() else source
    if source.is_dir() and not path.exists():
        raise InputError(
            source, "is a directory without tasks.jsonl; give a run directory or a file"
        )
    return read_tasks(path)


@dataclass
class Examples:
    examples: list[Example]
    dropped: Counter[str]


def to_examples(tasks: Iterable[Task], seed: int = 0, max_per_task: int | None = None) -> Examples:
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
    if path is None and cfg.source.is_dir() and (cfg.source / "manifest.json").exists():
        manifest = json.loads((cfg.source / "manifest.json").read_text(encoding="utf-8"))
        found = manifest.get("config", {}).get("seed_tasks")
        path = Path(found) if found else None
    if path is None:
        raise SelfInstructError(
            f"{cfg.source}: include_seeds needs the seed file; pass --seed-tasks PATH"
        )
    return [t.model_copy(update={"source": "seed"}) for t in read_tasks(path)]


def export(cfg: ExportConfig) -> ExportSummary:
    """Write the examples of `cfg.source` to `cfg.output`; returns what was written."""
    tasks = source_tasks(cfg.source)
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
    if cfg.format == "alpaca":
        rows = [
            {"instruction": e.instruction, "input": e.input, "output": e.response} for e in examples
        ]
        tmp = cfg.output.with_name(f".{cfg.output.name}.tmp")
        tmp.write_text(json.dumps(rows, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        tmp.replace(cfg.output)
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
    return ExportSummary(
        examples=len(examples),
        tasks=len(tasks),
        seed_tasks=len(seeds),
        dropped=dict(built.dropped),
    )
