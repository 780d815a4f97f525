"""How an instruction, its input and its answer are laid out for a model, in training and in eval.

A chat model has a template that says where the user's turn ends and the answer begins; most base
models (Gemma 3 270M, the paper's GPT-3) have none, and `apply_chat_template` then stops with an
error. They get a plain text format instead, the same one in `finetune` and `eval`, so a tuned
model is asked its questions exactly the way it was taught:

- `chat`: the model's own chat template; the user turn is the example's prompt (one of export's
  varied templates, as the paper varies them);
- `alpaca`: Stanford Alpaca's fixed prompt, with and without an input ("### Response:");
- `paper`: the Self-Instruct paper's fine-tuning layout ("{instruction}\\n\\nInput: {input}\\n\\n
  Output:" and the answer after a space), one fixed template of the several it samples.

`auto` picks `chat` when the tokenizer has a template and `alpaca` otherwise. `finetune` writes the
format it used into the adapter folder, and `eval` reads it back, so the pair cannot disagree.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from selfinstruct.errors import SelfInstructError
from selfinstruct.export import Example

PromptFormat = Literal["auto", "chat", "alpaca", "paper"]
Resolved = Literal["chat", "alpaca", "paper"]

ALPACA_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
ALPACA_WITHOUT_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n"
)
PAPER_WITH_INPUT = "{instruction}\n\nInput: {input}\n\nOutput:"
PAPER_WITHOUT_INPUT = "{instruction}\n\nOutput:"

# Written by finetune into the adapter folder; eval's `auto` reads it.
RECORD = "selfinstruct_prompt_format.json"


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def resolve(requested: PromptFormat, tokenizer: Any, model: str = "the model") -> Resolved:
    """The format to use with this tokenizer; `chat` without a template is a user error."""
    if requested == "auto":
        return "chat" if has_chat_template(tokenizer) else "alpaca"
    if requested == "chat" and not has_chat_template(tokenizer):
        raise SelfInstructError(
            f"{model} has no chat template (a base model), so --prompt-format chat cannot be "
            "used; use --prompt-format alpaca or paper (or auto, which picks alpaca)"
        )
    return requested


def prompt(fmt: Resolved, example: Example) -> str | list[dict[str, str]]:
    """What the model is given: chat turns for `chat`, one string otherwise."""
    if fmt == "chat":
        return [{"role": "user", "content": example.prompt}]
    instruction, given = example.instruction.strip(), example.input.strip()
    if fmt == "alpaca":
        template = ALPACA_WITH_INPUT if given else ALPACA_WITHOUT_INPUT
    else:
        template = PAPER_WITH_INPUT if given else PAPER_WITHOUT_INPUT
    return template.format(instruction=instruction, input=given)


def completion(fmt: Resolved, example: Example) -> str:
    """The answer as it follows the prompt (the paper's starts after a space)."""
    return f" {example.response}" if fmt == "paper" else example.response


def training_row(fmt: Resolved, example: Example) -> dict[str, Any]:
    """A TRL prompt/completion row: conversational for `chat` (TRL applies the template), plain
    text otherwise (TRL appends the end-of-sequence token to the completion)."""
    if fmt == "chat":
        return {
            "prompt": prompt(fmt, example),
            "completion": [{"role": "assistant", "content": example.response}],
        }
    return {"prompt": prompt(fmt, example), "completion": completion(fmt, example)}


def tokenized(tokenizer: Any, fmt: Resolved, example: Example) -> tuple[list[int], int]:
    """Token ids of prompt + answer (+ end of sequence), and how many of them are the prompt,
    exactly as training builds them: the answer starts where the two tokenizations part."""
    if fmt == "chat":
        turns = prompt(fmt, example)
        full = [*turns, {"role": "assistant", "content": example.response}]
        prompt_ids = tokenizer.apply_chat_template(
            turns, add_generation_prompt=True, tokenize=True, return_dict=True
        )["input_ids"]
        full_ids = tokenizer.apply_chat_template(full, tokenize=True, return_dict=True)["input_ids"]
    else:
        text = str(prompt(fmt, example))
        prompt_ids = tokenizer(text)["input_ids"]
        full_ids = tokenizer(text + completion(fmt, example) + (tokenizer.eos_token or ""))[
            "input_ids"
        ]
    shared = 0
    for a, b in zip(prompt_ids, full_ids, strict=False):
        if a != b:
            break
        shared += 1
    return list(full_ids), shared


def record(folder: Path, fmt: Resolved) -> None:
    (folder / RECORD).write_text(json.dumps({"prompt_format": fmt}) + "\n", encoding="utf-8")


def recorded(folder: Path | None) -> Resolved | None:
    """The format an adapter was trained with, when finetune wrote it down."""
    if folder is None or not (folder / RECORD).exists():
        return None
    value = json.loads((folder / RECORD).read_text(encoding="utf-8")).get("prompt_format")
    return value if value in ("chat", "alpaca", "paper") else None
