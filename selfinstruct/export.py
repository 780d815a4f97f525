"""Tasks → instruction-tuning examples, in the formats trainers and services read.

Each instance becomes one example. The instruction and input are joined with one of several
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
from collections.abc import Iterable
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


def source_tasks(source: Path) -> list[Task]:
    """Tasks from a run directory or an instruction file."""
    path = source / "tasks.jsonl" if source.is_dir() else source
    if source.is_dir() and not path.exists():
        raise InputError(
            source, "is a directory without tasks.jsonl; give a run directory or a file"
        )
    return read_tasks(path)


def to_examples(tasks: Iterable[Task], seed: int = 0) -> list[Example]:
    rng = random.Random(seed)
    examples = []
    for task in tasks:
        for inst in task.instances:
            template = rng.choice(WITH_INPUT if inst.input.strip() else WITHOUT_INPUT)
            prompt = template.format(instruction=task.instruction.strip(), input=inst.input.strip())
            examples.append(
                Example(
                    prompt=prompt,
                    response=inst.output.strip(),
                    instruction=task.instruction,
                    input=inst.input,
                    task_id=task.id,
                )
            )
    return examples


def _chat(example: Example, system: str | None) -> list[dict[str, str]]:
    turns = [{"role": "system", "content": system}] if system else []
    return [*turns, {"role": "user", "content": example.prompt}]


def prompt_completion_row(example: Example, system: str | None = None) -> dict[str, Any]:
    return {
        "prompt": _chat(example, system),
        "completion": [{"role": "assistant", "content": example.response}],
    }


def export(cfg: ExportConfig) -> int:
    """Write the examples of `cfg.source` to `cfg.output`; returns how many."""
    examples = to_examples(source_tasks(cfg.source), cfg.seed)
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
    return len(examples)
