"""Stage 1: new instructions. Its prompt, stop strings, sampling, parser and checks.

A few-shot prompt lists 8 instructions (seed and machine tasks) and asks for more; a completion
prompt ends with the next number ("9."), so a base model continues the list, and stops at the
number after the last new item or at a blank line (the paper's stops). Sampling is the paper's
(temperature 0.7, top_p 0.5, presence penalty 2), with a seed per prompt and, for completion
prompts, past the end-of-sequence token: small models otherwise end a list after one item.

The parser reads what real models write (tests/golden/): numbered lists in the usual shapes
("10.", "11)", "Task 12:", a bullet, a number whose dot was lost, "1. 1." twice-numbered), a chat
model's preamble before the list, sub-items and "Answer:" lines under an item (commentary,
dropped), prose after the list (a blank line followed by unnumbered text ends it). It reads in
two passes: what each line is (`_classify`), then how the lines group into items
(`_ListReader`). It never raises; whatever it cannot use comes back with a reason.

Each new instruction then meets the rule filters (`rules.py`) and the ROUGE-L novelty index of
the pool; those that pass are the stage's candidates.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from pydantic import BaseModel

from selfinstruct.backends.base import Completion, Prompt
from selfinstruct.config import GenerateConfig, SamplingParams
from selfinstruct.coverage import Reading
from selfinstruct.keys import RequestKey
from selfinstruct.prompts import Templates
from selfinstruct.records import Rejected, Task
from selfinstruct.rules import RuleFilter
from selfinstruct.similarity import RougeLIndex, no_provenance
from selfinstruct.stages.base import Ask, Candidate, Found, Slot, StageContext
from selfinstruct.stages.text import json_schema, one_line, read_json, unmark, with_json_hint

NAME = "instructions"
TEMPLATES = ("instructions", "instructions_classification")

# -- the prompt ----------------------------------------------------------------------------


def classification_prompt(number: int, share: float) -> bool:
    """Is instruction prompt `number` one for classification tasks? Spread evenly, so that any
    stretch of prompts holds the configured share."""
    return int((number + 1) * share) > int(number * share)


def choose_examples(
    cfg: GenerateConfig,
    number: int,
    pool: Sequence[Task],
    classification_pool: Sequence[Task],
    seeds: list[Task],
    classification_seeds: list[Task],
    classification_only: bool,
) -> list[str]:
    """The instructions prompt `number` shows: `machine_examples` from the pool it may see
    (its classification tasks only, for a classification prompt), the rest from the seeds,
    shuffled; the same for the same prompt, run after run."""
    rng = random.Random(f"{cfg.seed}:{number}")
    if classification_only:
        pool = classification_pool
        seeds = classification_seeds or seeds
    machine = rng.sample(pool, min(cfg.machine_examples, len(pool)))
    humans = rng.sample(
        seeds, min(cfg.human_examples + cfg.machine_examples - len(machine), len(seeds))
    )
    examples = [t.instruction for t in humans + machine]
    rng.shuffle(examples)
    return examples


def listing(instructions: list[str]) -> str:
    return "\n".join(f"{i}. {one_line(text)}" for i, text in enumerate(instructions, start=1))


def render(
    templates: Templates,
    examples: list[str],
    chat: bool,
    count: int,
    classification: bool = False,
    *,
    structured: bool,
) -> Prompt:
    """Few-shot prompt for new instructions; completion prompts end with the next number.

    `classification`: the prompt shows classification seeds only and asks for classification
    tasks (the paper's `--use_clf_seed_tasks_only`, which it used to get more of them).
    `structured`: the reply is asked for as JSON (`InstructionList`).
    """
    name = "instructions_classification" if classification else "instructions"
    shown = listing(examples)
    nxt = len(examples) + 1
    if chat:
        prompt = templates.render(name, True, examples=shown, count=count, next=nxt)
        return with_json_hint(prompt, JSON_HINT) if structured else prompt
    return templates.render(name, False, examples=f"{shown}\n{nxt}.")


def sampling(cfg: GenerateConfig, chat: bool, shown: int, prompt_number: int) -> SamplingParams:
    """The paper's sampling; a completion stops at the number after the last new item, or at a
    blank line. Completion prompts write past end-of-sequence (see the module docstring)."""
    last = shown + cfg.max_new_per_prompt + 1
    stop = () if chat else (f"\n{last}.", f"\n{last} .", "\n\n")
    update: dict[str, object] = {
        "stop": stop,
        "seed": cfg.seed + prompt_number,
        "ignore_eos": not chat,
    }
    if cfg.structured:
        update["json_schema"] = reply_schema(cfg.max_new_per_prompt)
    return cfg.instruction_sampling.model_copy(update=update)


# -- the structured reply (--structured) ---------------------------------------------------


class InstructionList(BaseModel):
    instructions: list[str]


# No placeholder to copy: a small model writes "<a task>" back as a task.
JSON_HINT = (
    'Reply with a JSON object only: its key "instructions" holds the new tasks as a list of '
    "strings, one task per string, without numbers."
)


def reply_schema(count: int) -> str:
    return json_schema(InstructionList, "instructions", count)


def reply_is_valid(text: str) -> bool:
    return read_json(InstructionList, text) is not None


_INLINE_NUMBER = re.compile(r"(?:^|(?<=\s))(\d{1,2})[.)]\s+")


def _inline_items(text: str) -> list[str]:
    """ "1. Plan a trip. 2. Name a bird.": a numbered list written into one string, split."""
    text = text.strip()
    marks = list(_INLINE_NUMBER.finditer(text))
    numbers = [int(m.group(1)) for m in marks]
    if len(marks) < 2 or marks[0].start() != 0:
        return [text]
    if numbers != list(range(numbers[0], numbers[0] + len(numbers))):
        return [text]
    ends = [m.start() for m in marks[1:]] + [len(text)]
    return [text[m.end() : e].strip() for m, e in zip(marks, ends, strict=True)]


def parse_json(text: str, truncated: bool, max_items: int | None = None) -> ParsedInstructions:
    """New instructions from a structured reply: each string tidied as a list item would be.
    A reply that is not the schema's JSON is dropped whole (`truncated` when cut off)."""
    out = ParsedInstructions()
    reply = read_json(InstructionList, text)
    if reply is None:
        out.dropped.append(
            ("truncated" if truncated else "invalid_json", text.strip() or "(empty)")
        )
        return out
    texts = []
    for raw in (part for item in reply.instructions for part in _inline_items(item)):
        found = _classify(raw.strip())
        body = found.marker[1] if found.marker else raw  # "9. Plan a trip" in a string
        texts.append((_tidy([body], found.titled), raw or "(an item with no text)"))
    out.take(texts, max_items)
    return out


# -- the parser: what each line is ---------------------------------------------------------

_NUMBERED = re.compile(
    r"^(?:#{1,6}\s*)?(?:(?:task|instruction)\s*)?#?(\d{1,3})\s*(?:[.)](?=\s|$)|:)\s*(.*)$",
    re.IGNORECASE,
)
_BULLET = re.compile(r"^[-*•]\s+(.*)$")
_BARE_NUMBER = re.compile(r"^(\d{1,3})\s+(\S.*)$")  # "3 Plan a trip": the dot was lost
_CHATTER = re.compile(
    r"^(sure|certainly|of course|absolutely|okay|ok|great|here (are|is)|below (are|is)|"
    r"i hope|let me know|these (tasks|instructions))\b",
    re.IGNORECASE,
)
_TITLED = re.compile(r"^(.{1,80}?)\s*:\s+(.+)$")
_BOLD_TITLE = re.compile(r"^[^*]*?\*\*[^*]{1,80}\*\*\s*:")  # "3. **Party**: Plan a party ..."
_ANSWER_LINE = re.compile(r"^(answer|output|solution|response|example)s?\s*:", re.IGNORECASE)
_QUOTES = {'"': '"', "“": "”", "'": "'"}


@dataclass(frozen=True, slots=True)
class _Line:
    raw: str
    text: str  # stripped; "" for a blank line
    depth: int  # indentation
    # A list item for sure: (its number, or None for a bullet; its text).
    marker: tuple[int | None, str] | None
    # "3 Plan a trip": an item only where exactly that number is due next, so an instruction
    # that starts with a number ("3 apples cost ...") is not cut up.
    bare: tuple[int, str] | None
    titled: bool  # "3. **Party**: Plan a party": a title before the task
    answer: bool  # "Answer: a robin": the model answering its own task


def _classify(raw: str) -> _Line:
    text = raw.strip()
    depth = len(raw) - len(raw.lstrip())
    if not text:
        return _Line(raw, "", depth, None, None, False, False)
    bare_text = unmark(text).strip()
    marker: tuple[int | None, str] | None = None
    bare = None
    if numbered := _NUMBERED.match(bare_text):
        marker = (int(numbered.group(1)), numbered.group(2))
    elif bullet := _BULLET.match(bare_text):
        marker = (None, bullet.group(1))
    elif lost := _BARE_NUMBER.match(bare_text):
        bare = (int(lost.group(1)), lost.group(2))
    return _Line(
        raw,
        text,
        depth,
        marker,
        bare,
        titled=bool(_BOLD_TITLE.match(text)),
        answer=bool(_ANSWER_LINE.match(unmark(text))),
    )


# -- the parser: how lines group into items ------------------------------------------------


@dataclass
class ParsedInstructions:
    instructions: list[str] = field(default_factory=list)
    dropped: list[tuple[str, str]] = field(default_factory=list)  # (reason, raw text)

    def take(self, texts: list[tuple[str, str]], max_items: int | None) -> None:
        """Keep each tidied item (tidy, raw) in order: an empty one is dropped, and those past
        `max_items` (the prompt asked for no more) too."""
        for tidy, raw in texts:
            if not tidy:
                self.dropped.append(("empty", raw))
            elif max_items is not None and len(self.instructions) >= max_items:
                self.dropped.append(("past_stop", tidy))
            else:
                self.instructions.append(tidy)


@dataclass
class _Item:
    lines: list[str]
    titled: bool


class _ListReader:
    """Groups classified lines into list items, a preamble before the list, commentary under
    an item (sub-items, answers) and trailing text after it."""

    def __init__(self, continues_list: bool, first_number: int | None) -> None:
        self.items: list[_Item] = []
        self.dropped: list[tuple[str, str]] = []
        self.preamble: list[str] = []
        self.trailing: str | None = None
        # The item being read; a prompt that ends with "9." has item 9 open from the start.
        self.current: _Item | None = _Item([], False) if continues_list else None
        self.listed = continues_list  # has a list item opened yet?
        self.number = first_number  # the number of the open item, when known
        self.indent = 0  # of the line that opened the open item
        self.nested = False  # inside a sub-item (or an answer) of the open item
        self.after_blank = False

    def read(self, lines: list[_Line]) -> None:
        for index, line in enumerate(lines):
            expected = self.number + 1 if self.number is not None else None
            marker = line.marker
            if marker is None and line.bare is not None and line.bare[0] == expected:
                marker = line.bare
            if marker is not None:
                self._marker(line, marker)
            elif not line.text:
                self._blank()
            elif not self.listed:
                self.preamble.append(line.text)
            elif self.after_blank or self.current is None:
                self.trailing = "\n".join(x.raw for x in lines[index:]).strip()
                return
            else:
                self._text(line)

    def _marker(self, line: _Line, marker: tuple[int | None, str]) -> None:
        if self.current is not None and self.listed and line.depth > self.indent:
            # "1. A task\n   - a note on it": a sub-item is commentary, not a new task.
            self.dropped.append(("nested", line.text))
            self.nested = True
            return
        self._close()
        expected = self.number + 1 if self.number is not None else None
        self.number = marker[0] if marker[0] is not None else expected
        body = marker[1]
        if self.number is not None:
            # "1. 1. Plan a trip": a model that numbers its items twice.
            body = re.sub(rf"^{self.number}\s*[.)]\s+", "", body)
        self.current = _Item([body], line.titled)
        self.listed, self.after_blank, self.nested = True, False, False
        self.indent = line.depth

    def _blank(self) -> None:
        if self.current is not None and not self.current.lines:
            return  # "9.\n\nPlan a trip": the item's text starts after a blank line
        self._close()
        self.after_blank = True

    def _text(self, line: _Line) -> None:
        assert self.current is not None
        if self.nested and (line.depth > self.indent or self.dropped[-1][0] == "answer"):
            reason, raw = self.dropped[-1]
            self.dropped[-1] = (reason, f"{raw} {line.text}")
        elif line.answer:
            # "1. Name a bird.\n   Answer: a robin": the model answered its own task.
            self.dropped.append(("answer", line.text))
            self.nested = True
        else:
            self.current.lines.append(line.text)

    def _close(self) -> None:
        if self.current is not None:
            self.items.append(self.current)
        self.current = None

    def finish(self) -> None:
        self._close()


def _tidy(parts: list[str], titled: bool) -> str:
    text = re.sub(r"\s+", " ", " ".join(parts)).strip()
    if titled:
        # A chat list item "**Title**: the task itself": the task is what follows the title.
        found = _TITLED.match(text)
        if found:
            text = found.group(2)
    text = unmark(text).strip()
    if len(text) > 1 and text[0] in _QUOTES and text.endswith(_QUOTES[text[0]]):
        text = text[1:-1].strip()
    return text


def parse(
    text: str,
    truncated: bool,
    continues_list: bool,
    *,
    first_number: int | None = None,
    max_items: int | None = None,
) -> ParsedInstructions:
    """New instructions from a completion.

    `continues_list`: the prompt ended with the next item's number ("9."), so the text starts
    with that item's body (`first_number` is that number, when known). Lines before the first
    list item of a chat reply are a preamble, never an instruction; a blank line followed by
    unnumbered text ends the list. When the model was cut off (`truncated`) the last item is
    dropped. Items past `max_items` are dropped as `past_stop` (the prompt asked for no more).
    """
    reader = _ListReader(continues_list, first_number)
    reader.read([_classify(line) for line in text.splitlines()])
    reader.finish()
    out = ParsedInstructions(dropped=reader.dropped)
    items = reader.items

    first_item = " ".join(items[0].lines) if items else ""
    if continues_list and _CHATTER.match(first_item) and first_item.endswith(":"):
        # "9. Sure! Here are more tasks:": a chat model's preamble where the item was due.
        out.dropped.append(("preamble", " ".join(items.pop(0).lines)))
    if reader.listed:
        out.dropped.extend(("preamble", line) for line in reader.preamble)
        if reader.trailing is not None:
            out.dropped.append(("trailing_text", reader.trailing))
    else:
        # No list at all: one instruction per line, minus the chat model's pleasantries.
        for line in reader.preamble:
            if _CHATTER.match(line) or line.endswith(":"):
                out.dropped.append(("preamble", line))
            else:
                items.append(_Item([line], False))

    texts = [(_tidy(item.lines, item.titled), " ".join(item.lines)) for item in items]
    texts = [(tidy, raw or "(an item with no text)") for tidy, raw in texts]
    if truncated and reader.trailing is None and reader.nested:
        # Cut off inside a sub-item: that sub-item is what is incomplete, not its task.
        last = max(i for i, (r, _) in enumerate(out.dropped) if r in {"nested", "answer"})
        out.dropped[last] = ("truncated", out.dropped[last][1])
    elif truncated and texts and reader.trailing is None:
        out.dropped.append(("truncated", texts.pop()[1]))
    out.take(texts, max_items)
    return out


# -- checks: the rules, then novelty against the pool ---------------------------------------


def read(
    completion: Completion,
    *,
    shown: int,
    chat: bool,
    cfg: GenerateConfig,
    rules: RuleFilter,
    index: RougeLIndex,
    request_id: str,
) -> tuple[list[Found], list[Rejected], Reading | None]:
    """The candidates of one instruction list, every item dropped on the way, and how much of
    the completion the parser read (None: the request failed). Each candidate is added to
    `index`, so the next list is compared with it (call in prompt order)."""
    if completion.finish_reason == "error":
        failed = Rejected.of("request", "request_failed", completion.error or "", request_id)
        return [], [failed], None
    truncated = completion.finish_reason == "length"
    if cfg.structured:
        parsed = parse_json(completion.text, truncated, cfg.max_new_per_prompt)
    else:
        parsed = parse(
            completion.text,
            truncated,
            continues_list=not chat,
            first_number=None if chat else shown + 1,
            max_items=cfg.max_new_per_prompt,
        )
    rejected = [Rejected.of("parse", reason, raw, request_id) for reason, raw in parsed.dropped]
    reading = Reading(NAME, len(parsed.instructions), tuple(r for r, _ in parsed.dropped))
    hits = [rules.check(text) for text in parsed.instructions]
    # The list's novel items in one vectorised pass: the same decisions as one at a time.
    first = len(index)
    passed = [text for text, hit in zip(parsed.instructions, hits, strict=True) if hit is None]
    matches = iter(index.add_if_novel_many(passed))
    kept: list[str] = []
    for text, hit in zip(parsed.instructions, hits, strict=True):
        if hit is not None:
            rejected.append(Rejected.of("rules", hit.reason, text, request_id, detail=hit.detail))
            continue
        match = next(matches)
        if match is not None:
            rejected.append(
                Rejected.of(
                    "novelty",
                    "rouge_l",
                    text,
                    request_id,
                    most_similar=match.text,
                    score=match.score,
                )
            )
            continue
        kept.append(text)
    # Each kept item against the pool as it was when it was added (the novel ones were added
    # last, in order), beside the loop: provenance decides nothing.
    provenances = index.provenance(first, len(kept)) if cfg.provenance else no_provenance(len(kept))
    candidates = [Found(text, provenances, i) for i, text in enumerate(kept)]
    return candidates, rejected, reading


class InstructionStage:
    """Stage 1 for the loop: an instruction prompt in, its candidates out (in prompt order)."""

    name = NAME

    def slot(
        self,
        number: int,
        pool: Sequence[Task],
        classification_pool: Sequence[Task],
        ctx: StageContext,
    ) -> Slot:
        """Instruction prompt `number`, showing machine tasks from `pool` (those it may see;
        `classification_pool`: the classification tasks among them)."""
        only = classification_prompt(number, ctx.options.classification_prompts)
        examples = choose_examples(
            ctx.options,
            number,
            pool,
            classification_pool,
            ctx.seeds,
            ctx.demos.classification,
            only,
        )
        return Slot(prompt=number, examples=examples, classification_only=only)

    def ask(self, slot: Slot, ctx: StageContext) -> Ask:
        prompt = render(
            ctx.templates,
            slot.examples,
            ctx.chat,
            ctx.options.max_new_per_prompt,
            slot.classification_only,
            structured=ctx.structured,
        )
        params = sampling(ctx.options, ctx.chat, slot.shown, slot.prompt)
        return Ask(prompt, params, reply_is_valid)

    def read(self, slot: Slot, completion: Completion, key: RequestKey, ctx: StageContext) -> bool:
        found, slot.rejected, slot.reading = read(
            completion,
            shown=slot.shown,
            chat=ctx.chat,
            cfg=ctx.options,
            rules=ctx.rules,
            index=ctx.index,
            request_id=key.text,
        )
        slot.candidates = [Candidate(slot.prompt, i, item, key) for i, item in enumerate(found)]
        slot.processed = True
        return True


STAGE = InstructionStage()
