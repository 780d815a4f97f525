"""Prompt templates for each Self-Instruct stage: render from records, parse completions back.

Every function here is pure. Templates live in `prompts/` as plain text with `{placeholders}`;
each stage has a completion-style template for base models and a `.chat` one for chat models.
Parsers never raise: anything they cannot use comes back as a reason code with the raw text, so
the caller can record it in rejected.jsonl.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from selfinstruct.backends.base import Prompt
from selfinstruct.errors import ConfigError
from selfinstruct.records import Instance, Task

PROMPTS_DIR = Path(__file__).resolve().parents[1] / "prompts"
STAGES = ("instructions", "is_classification", "instances_input_first", "instances_output_first")


@dataclass(frozen=True)
class Templates:
    """The text of every stage's template, completion and chat variants."""

    completion: dict[str, str]
    chat: dict[str, str]

    @classmethod
    def load(cls, directory: Path | None = None) -> Templates:
        directory = directory or PROMPTS_DIR
        completion, chat = {}, {}
        for stage in STAGES:
            for variant, target in (("", completion), (".chat", chat)):
                path = directory / f"{stage}{variant}.txt"
                try:
                    target[stage] = path.read_text(encoding="utf-8")
                except OSError as exc:
                    raise ConfigError(
                        f"{path}: cannot read prompt template ({exc.strerror}); point "
                        "--prompts-dir at a folder with every stage's template"
                    ) from None
        return cls(completion, chat)

    def render(self, stage: str, chat: bool, **values: object) -> Prompt:
        template = (self.chat if chat else self.completion)[stage]
        text = template.format(**values).rstrip("\n")
        if chat:
            return [{"role": "user", "content": text}]
        return text + "\n"


# -- stage 1: new instructions -------------------------------------------------------------


def instruction_examples(instructions: list[str]) -> str:
    return "\n".join(f"{i}. {_one_line(text)}" for i, text in enumerate(instructions, start=1))


def render_instructions(
    templates: Templates, examples: list[str], chat: bool, count: int
) -> Prompt:
    """Few-shot prompt for new instructions; completion prompts end with the next number."""
    listing = instruction_examples(examples)
    nxt = len(examples) + 1
    if chat:
        return templates.render("instructions", True, examples=listing, count=count, next=nxt)
    return templates.render("instructions", False, examples=f"{listing}\n{nxt}.")


_NUMBERED = re.compile(r"^\s*(?:Task\s*)?(\d{1,3})\s*[.):]\s*(.*)$", re.IGNORECASE)
_BULLET = re.compile(r"^\s*[-*•]\s+(.*)$")
_CHATTER = re.compile(
    r"^(sure|certainly|of course|here (are|is)|okay|ok|absolutely|great)\b.*[:!.]?$",
    re.IGNORECASE,
)


@dataclass
class ParsedInstructions:
    instructions: list[str] = field(default_factory=list)
    dropped: list[tuple[str, str]] = field(default_factory=list)  # (reason, raw text)


def parse_instructions(text: str, truncated: bool, continues_list: bool) -> ParsedInstructions:
    """New instructions from a completion.

    Handles numbered lists ("9. ...", "Task 10: ..."), bullets, a chat model's chatter ("Sure!
    Here are ..."), blank lines, and items continued over several lines. `continues_list`: the
    prompt ended with a number, so the text starts with the first item's body. When the model
    was cut off (`truncated`), the last item is dropped as `truncated`.
    """
    out = ParsedInstructions()
    items: list[str] = []
    current: list[str] | None = [] if continues_list else None
    for line in text.splitlines():
        numbered = _NUMBERED.match(line)
        bullet = _BULLET.match(line) if not numbered else None
        if numbered or bullet:
            if current is not None:
                items.append(" ".join(current))
            current = [(numbered.group(2) if numbered else bullet.group(1)).strip()]  # type: ignore[union-attr]
        elif not line.strip():
            if current:
                items.append(" ".join(current))
            current = None
        elif current == [] and _CHATTER.match(line.strip()):
            out.dropped.append(("chatter", line.strip()))  # "Sure! ..." where item 9 was due
            current = None
        elif current is not None:
            current.append(line.strip())
        elif _CHATTER.match(line.strip()):
            out.dropped.append(("chatter", line.strip()))
        else:
            current = [line.strip()]  # an unnumbered line: take it as an item
    if current:
        items.append(" ".join(current))
    items = [re.sub(r"\s+", " ", item).strip() for item in items]
    if truncated and items:
        out.dropped.append(("truncated", items.pop()))
    for item in items:
        if item:
            out.instructions.append(item)
    return out


# -- stage 3: classification or not --------------------------------------------------------


def classification_examples(tasks: list[Task]) -> str:
    return "\n\n".join(
        f"Task: {_one_line(t.instruction)}\nIs it classification? "
        f"{'Yes' if t.is_classification else 'No'}"
        for t in tasks
    )


def render_is_classification(
    templates: Templates, examples: list[Task], instruction: str, chat: bool
) -> Prompt:
    return templates.render(
        "is_classification",
        chat,
        examples=classification_examples(examples),
        instruction=_one_line(instruction),
    )


def parse_is_classification(text: str) -> bool | None:
    """Yes -> True, No -> False, anything else -> None (the caller treats it as "no")."""
    match = re.match(r"\W*(yes|no)\b", text.strip(), re.IGNORECASE)
    if match is None:
        return None
    return match.group(1).lower() == "yes"


# -- stage 4: instances --------------------------------------------------------------------


def _instance_examples(tasks: list[Task], pair: str, between: str) -> str:
    """Few-shot blocks: each task's instruction, then its instances in `pair`'s format."""
    return "\n\n".join(
        f"Task: {_one_line(task.instruction)}\n"
        + between.join(pair.format(input=i.input, output=i.output) for i in task.instances)
        for task in tasks
    )


def input_first_examples(tasks: list[Task]) -> str:
    return _instance_examples(tasks, "Input: {input}\nOutput: {output}", "\n\n")


def output_first_examples(tasks: list[Task]) -> str:
    return _instance_examples(tasks, "Class label: {output}\nInput: {input}", "\n")


def render_instances(
    templates: Templates, examples: list[Task], instruction: str, classification: bool, chat: bool
) -> Prompt:
    if classification:
        stage, shown = "instances_output_first", output_first_examples(examples)
    else:
        stage, shown = "instances_input_first", input_first_examples(examples)
    return templates.render(stage, chat, examples=shown, instruction=_one_line(instruction))


def _cut_at_next_task(text: str) -> str:
    return re.split(r"(?m)^\s*Task\s*:", text, maxsplit=1)[0]


_PAIR = re.compile(
    r"Input\s*:(.*?)\n\s*Output\s*:(.*?)(?=\n\s*(?:Example \d+\s*\n\s*)?Input\s*:|\Z)",
    re.IGNORECASE | re.DOTALL,
)
_LABELLED = re.compile(
    r"Class label\s*:(.*?)(?:\n\s*Input\s*:(.*?))?(?=\n\s*Class label\s*:|\Z)",
    re.IGNORECASE | re.DOTALL,
)


def parse_instances(text: str, classification: bool, truncated: bool) -> list[Instance]:
    """Instances from a completion: Input/Output pairs, or Class label/Input pairs.

    A completion that is only an output (the task needs no input) gives one instance with an
    empty input. When the model was cut off, the last instance is dropped.
    """
    body = _cut_at_next_task(text)
    instances: list[Instance] = []
    if classification:
        for label, given in _LABELLED.findall(body):
            instances.append(Instance(input=_clean(given), output=_clean(label)))
    else:
        for given, output in _PAIR.findall(body):
            instances.append(Instance(input=_clean(given), output=_clean(output)))
        if not instances:
            only = re.match(r"\s*Output\s*:(.*)\Z", body, re.IGNORECASE | re.DOTALL)
            if only:
                instances.append(Instance(input="", output=_clean(only.group(1))))
    if truncated and instances:
        instances.pop()
    return instances


def _clean(text: str) -> str:
    text = text.strip()
    return "" if text.lower() in {"", "none", "[none]", "n/a", "<noinput>", "(none)"} else text


def _one_line(text: str) -> str:
    return re.sub(r"\s*\n\s*", " ", text).strip()
