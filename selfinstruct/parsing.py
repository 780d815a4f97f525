"""Parse model completions back into records: new instructions, yes/no, instances.

Every parser here is pure and never raises. What it cannot use comes back as a `(reason, text)`
pair, so the caller can keep it in rejected.jsonl: nothing is dropped silently.

The rules follow what real models write, kept as a golden corpus under tests/golden/ (GPT-3
runs of the paper's own code, the bundled SmolLM2, chat models through an OpenAI-compatible
server), not only what our own prompts ask for:

- instructions: numbered lists in any of the usual shapes ("10.", "11)", "Task 12:", a bullet,
  a number whose dot was lost), a chat model's preamble before the list, prose after it (a
  blank line followed by unnumbered text ends the list, as the paper's blank-line stop does);
- instances: `Input:`/`Output:` pairs, `Example N` headers, numbered labels (`Input 2:`),
  task-specific field names (`Sentence:`, `List:`; kept as part of the input, as the paper
  keeps them), `Output:` written before `Input:`, any letter case, markdown bold, and a bare
  answer with no labels at all (an output, when the task needs no input);
- class labels: the label is the rest of its `Class label:` line; what follows, under
  whatever field name, is the input.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from selfinstruct.records import Instance

# -- shared helpers ------------------------------------------------------------------------

# Ways a model says "this task has no input". They are normalised to "" for inputs only: an
# output of "None" or "N/A" is a real answer and is kept as written.
NO_INPUT_MARKERS = frozenset(
    {
        "",
        "none",
        "none.",
        "[none]",
        "(none)",
        "n/a",
        "na",
        "null",
        "nil",
        "-",
        "empty",
        "<noinput>",
        "<no input>",
        "no input",
        "no input.",
        "no input needed",
        "no input required",
        "not applicable",
        "not applicable.",
    }
)


def clean_input(text: str) -> str:
    """An instance input with surrounding space removed; no-input markers become ""."""
    text = text.strip()
    return "" if text.lower() in NO_INPUT_MARKERS else text


def one_line(text: str) -> str:
    return re.sub(r"\s*\n\s*", " ", text).strip()


# Markdown a chat model wraps around labels and list items ("**Input:**", "### Example 1").
_EMPHASIS = re.compile(r"\*\*|__")


def _unmark(line: str) -> str:
    return _EMPHASIS.sub("", line)


# -- stage 1: new instructions -------------------------------------------------------------

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


@dataclass
class ParsedInstructions:
    instructions: list[str] = field(default_factory=list)
    dropped: list[tuple[str, str]] = field(default_factory=list)  # (reason, raw text)


def _list_marker(line: str, expected: int | None) -> tuple[int | None, str] | None:
    """(number, body) when `line` opens a list item, else None."""
    bare = _unmark(line).strip()
    numbered = _NUMBERED.match(bare)
    if numbered:
        return int(numbered.group(1)), numbered.group(2)
    bullet = _BULLET.match(bare)
    if bullet:
        return None, bullet.group(1)
    # A number without its dot counts only where exactly that number is due next, so an
    # instruction that starts with a number ("3 apples cost ...") is not cut up.
    lost = _BARE_NUMBER.match(bare)
    if lost and expected is not None and int(lost.group(1)) == expected:
        return expected, lost.group(2)
    return None


def _tidy_instruction(parts: list[str], titled: bool) -> str:
    text = re.sub(r"\s+", " ", " ".join(parts)).strip()
    if titled:
        # A chat list item "**Title**: the task itself": the task is what follows the title.
        found = _TITLED.match(text)
        if found:
            text = found.group(2)
    text = _unmark(text).strip()
    if len(text) > 1 and text[0] in _QUOTES and text.endswith(_QUOTES[text[0]]):
        text = text[1:-1].strip()
    return text


def parse_instructions(
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
    out = ParsedInstructions()
    items: list[tuple[list[str], bool]] = []  # (lines, titled)
    current: list[str] | None = [] if continues_list else None
    titled = False
    number = first_number
    listed = continues_list  # has a list item opened yet?
    indent = 0  # of the line that opened the current item
    nested = False  # inside a sub-item of the current item
    after_blank = False
    preamble: list[str] = []
    trailing: str | None = None
    lines = text.splitlines()

    def close() -> None:
        nonlocal current
        if current is not None:
            items.append((current, titled))
        current = None

    for index, line in enumerate(lines):
        stripped = line.strip()
        depth = len(line) - len(line.lstrip())
        expected = number + 1 if number is not None else None
        marker = _list_marker(stripped, expected) if stripped else None
        if marker is not None and current is not None and listed and depth > indent:
            # "1. A task\n   - a note on it": a sub-item is commentary, not a new task.
            out.dropped.append(("nested", stripped))
            nested = True
            continue
        if marker is not None:
            close()
            number = marker[0] if marker[0] is not None else expected
            body = marker[1]
            if number is not None:
                # "1. 1. Plan a trip": a model that numbers its items twice.
                body = re.sub(rf"^{number}\s*[.)]\s+", "", body)
            current, listed, after_blank, nested = [body], True, False, False
            indent = depth
            titled = bool(_BOLD_TITLE.match(stripped))
            continue
        if not stripped:
            if current == []:
                continue  # "9.\n\nPlan a trip": the item's text starts after a blank line
            close()
            after_blank = True
            continue
        if not listed:
            preamble.append(stripped)
            continue
        if after_blank or current is None:
            trailing = "\n".join(lines[index:]).strip()
            break
        if nested and (depth > indent or out.dropped[-1][0] == "answer"):
            reason, raw = out.dropped[-1]
            out.dropped[-1] = (reason, f"{raw} {stripped}")
            continue
        if _ANSWER_LINE.match(_unmark(stripped)):
            # "1. Name a bird.\n   Answer: a robin": the model answered its own task.
            out.dropped.append(("answer", stripped))
            nested = True
            continue
        current.append(stripped)
    close()

    first_item = " ".join(items[0][0]) if items else ""
    if continues_list and _CHATTER.match(first_item) and first_item.endswith(":"):
        # "9. Sure! Here are more tasks:": a chat model's preamble where the item was due.
        out.dropped.append(("preamble", " ".join(items.pop(0)[0])))
    if listed:
        out.dropped.extend(("preamble", line) for line in preamble)
        if trailing is not None:
            out.dropped.append(("trailing_text", trailing))
    else:
        # No list at all: one instruction per line, minus the chat model's pleasantries.
        for line in preamble:
            if _CHATTER.match(line) or line.endswith(":"):
                out.dropped.append(("preamble", line))
            else:
                items.append(([line], False))

    texts = [(_tidy_instruction(parts, is_titled), " ".join(parts)) for parts, is_titled in items]
    texts = [(tidy, raw or "(an item with no text)") for tidy, raw in texts]
    if truncated and trailing is None and nested:
        # Cut off inside a sub-item: that sub-item is what is incomplete, not its task.
        last_nested = max(i for i, (r, _) in enumerate(out.dropped) if r in {"nested", "answer"})
        out.dropped[last_nested] = ("truncated", out.dropped[last_nested][1])
    elif truncated and texts and trailing is None:
        out.dropped.append(("truncated", texts.pop()[1]))
    for tidy, raw in texts:
        if not tidy:
            out.dropped.append(("empty", raw))
        elif max_items is not None and len(out.instructions) >= max_items:
            out.dropped.append(("past_stop", tidy))
        else:
            out.instructions.append(tidy)
    return out


# -- stage 3: classification or not --------------------------------------------------------

_LEADING_ANSWER = re.compile(r"^[\W_]*(yes|no)\b", re.IGNORECASE)
# "Is it classification? Yes" echoed from the examples, or "The answer is no."
_STATED_ANSWER = re.compile(r"(?:classification\?|the answer is:?)\s*\W*(yes|no)\b", re.IGNORECASE)
_NEGATED = re.compile(r"^(it|this|this task|that)\s+(is not|isn't)\b", re.IGNORECASE)
_AFFIRMED = re.compile(r"^(it|this|this task|that)\s+is\s+(a\s+)?classification\b", re.IGNORECASE)


def parse_is_classification(text: str) -> bool | None:
    """Yes -> True, No -> False, unclear -> None (the caller treats that as "no").

    Base models answer "Yes"/"No"; chat models sometimes answer in a sentence ("This is not a
    classification task.", "The answer is yes.") or echo the question before answering. A
    sentence that only restates the definition ("A task is a classification task when ...")
    is no answer.
    """
    stripped = text.strip()
    leading = _LEADING_ANSWER.match(stripped)
    if leading:
        return leading.group(1).lower() == "yes"
    stated = _STATED_ANSWER.search(stripped)
    if stated:
        return stated.group(1).lower() == "yes"
    first = stripped.split("\n", 1)[0]
    if _NEGATED.search(first):
        return False
    if _AFFIRMED.search(first):
        return True
    return None


# -- stage 4: instances --------------------------------------------------------------------


@dataclass
class ParsedInstances:
    instances: list[Instance] = field(default_factory=list)
    dropped: list[tuple[str, str]] = field(default_factory=list)  # (reason, raw text)
    last_kept: bool = False  # was the text's last piece kept (so a cut-off would be in it)?

    def keep(self, given: str, output: str) -> None:
        self.instances.append(Instance(input=clean_input(given), output=output.strip()))
        self.last_kept = True

    def drop(self, reason: str, text: str) -> None:
        self.dropped.append((reason, text.strip()))
        self.last_kept = False

    def cut_off(self) -> None:
        """The model was cut off: whatever the text ended with is incomplete."""
        if self.last_kept and self.instances:
            last = self.instances.pop()
            self.dropped.append(("truncated", f"{last.input}\n{last.output}".strip()))
        elif self.dropped:
            self.dropped[-1] = ("truncated", self.dropped[-1][1])


_NEXT_TASK = re.compile(r"(?m)^[ \t]*(?:\*\*)?Task\s*(?:\*\*)?\s*:")
# "Example 1", "Example 2:", "### Example 3", "**Example**": a header line, not prose that
# starts with the word ("Example sentences: ...").
_EXAMPLE_HEADER = re.compile(
    r"(?im)^[ \t]*(?:#{1,6}[ \t]*)?(?:\*\*|__)?example"
    r"(?:[ \t]*\d+[ \t]*[.:)]?|[ \t]*[.:)]?(?=[ \t]*(?:\*\*|__)?[ \t]*$))(?:\*\*|__)?[ \t]*:?"
)
# A label opens a line: "Input:", "input 2:", "**Output:**", "Output 3 :".
_LABEL = re.compile(
    r"(?im)^[ \t]*(?:[-*][ \t]+)?(?:\*\*|__)?(input|output)[ \t]*\d*[ \t]*(?:\*\*|__)?[ \t]*:"
    r"(?:\*\*|__)?"
)
_FIELD = re.compile(r"^([A-Z][\w' -]{0,40}?)\s*:")  # "Sentence:", "Question 1:", "List:"

# Words in an instruction that point at something the task works on. Used only to decide
# whether unlabelled text can be a whole answer (an output with no input).
_NEEDS_INPUT = re.compile(
    r"\b(given|following|provided|below|above|these|this|input|attached|"
    r"(either|both|each|the two) (participants?|parties|people|persons?)|speakers?|"
    r"the (?:[\w-]+ )?(text|sentences?|paragraph|passage|article|story|poem|essay|document|"
    r"list|words?|numbers?|email|letter|message|review|tweet|post|code|function|program|snippet|"
    r"table|data|dataset|string|equation|expression|question|statement|claim|conversations?|"
    r"dialogues?|description|recipe|summary|headline|title|sequence|array|url|address|report|"
    r"name|names|phrase|quote|lyrics|transcript|query|product|movie|book|song|passage|blank|"
    r"problems?|argument|comment|ticket|password|item|speakers?|situation|contract|excerpt|"
    r"chat|response|answer|result|paper|case|image|file))\b",
    re.IGNORECASE,
)


def needs_input(instruction: str) -> bool:
    """Does the instruction refer to something it is given (a text, a list, "the following")?"""
    return bool(_NEEDS_INPUT.search(instruction))


def _cut_at_next_task(text: str) -> str:
    return _NEXT_TASK.split(text, maxsplit=1)[0]


def parse_instances(
    text: str, classification: bool, truncated: bool, instruction: str = ""
) -> ParsedInstances:
    """Instances from a completion: output-first for classification, input-first otherwise.

    A classification completion without any `Class label:` is read as input-first, which is
    what a model that ignored the format wrote. When the model was cut off, the last instance
    is dropped as `truncated`.
    """
    body = _cut_at_next_task(text)
    parsed = ParsedInstances()
    if classification and re.search(r"(?im)^[ \t*_#]*class[ \t]*label", body):
        _output_first(body, parsed)
    else:
        _input_first(body, instruction, parsed)
    _trim_trailing_talk(parsed, classification)
    if truncated:
        parsed.cut_off()
    return parsed


# A last paragraph in which the model talks about the task instead of answering it ("Please
# provide ...", "Here is the next task"): small models write it after their last example.
_TALK = re.compile(
    r"^(please|feel free|let me know|i hope|good luck|here (is|are)|now,? (write|let)|"
    r"(note:?\s+)?((this|the|your|next|each) )+(task|instruction|example)s?\b|in this task|"
    r"you can't)",
    re.IGNORECASE,
)


def _trim_trailing_talk(parsed: ParsedInstances, classification: bool) -> None:
    if not (parsed.last_kept and parsed.instances):
        return
    last = parsed.instances[-1]
    text = last.input if classification else last.output
    body, sep, tail = text.rpartition("\n\n")
    if not sep or not body.strip() or not _TALK.match(tail.strip()):
        return
    trimmed = body.strip()
    if classification:
        parsed.instances[-1] = Instance(input=clean_input(trimmed), output=last.output)
    else:
        parsed.instances[-1] = Instance(input=last.input, output=trimmed)
    parsed.dropped.append(("trailing_text", tail.strip()))


_CLASS_LABEL = re.compile(
    r"(?im)^[ \t]*(?:[-*][ \t]+)?(?:\*\*|__)?class[ \t]*label[ \t]*\d*[ \t]*(?:\*\*|__)?[ \t]*:"
    r"(?:\*\*|__)?"
)


def _output_first(body: str, parsed: ParsedInstances) -> None:
    starts = [m for m in _CLASS_LABEL.finditer(body)]
    for k, found in enumerate(starts):
        end = starts[k + 1].start() if k + 1 < len(starts) else len(body)
        chunk = body[found.end() : end].lstrip()
        label, _, rest = chunk.partition("\n")
        label = _unmark(label).strip()
        labels = list(_LABEL.finditer(rest))
        first = labels[0] if labels else None
        if first and first.group(1).lower() == "output" and not rest[: first.start()].strip():
            answer, _, extra = rest[first.end() :].strip().partition("\n")
            if answer.strip().lower() == label.lower() and label:
                # "Class label: Blue\nOutput: Blue": a label given with no input, restated.
                parsed.keep("", label)
                if extra.strip():
                    parsed.drop("trailing_text", extra)
            else:
                # "Class label: X\nOutput: Y": the model mixed the two formats.
                parsed.drop("mixed_format", f"{label}\n{rest}")
            continue
        # The input runs to the next label line; a trailing "Output: ..." echo is not input.
        stop = next((m.start() for m in labels if m.group(1).lower() == "output"), len(rest))
        given = rest[:stop]
        opening = _LABEL.match(given)
        if opening and opening.group(1).lower() == "input":
            given = given[opening.end() :]
        parsed.keep(given, label)


def _input_first(body: str, instruction: str, parsed: ParsedInstances) -> None:
    headers = list(_EXAMPLE_HEADER.finditer(body))
    if headers:
        blocks = [
            body[h.end() : headers[k + 1].start() if k + 1 < len(headers) else len(body)]
            for k, h in enumerate(headers)
        ]
        if body[: headers[0].start()].strip():
            blocks.insert(0, body[: headers[0].start()])
    else:
        blocks = [body]
    labelled = any(_LABEL.search(block) for block in blocks)
    for block in blocks:
        if not block.strip():
            continue
        if not _LABEL.search(block):
            _unlabelled(block, instruction, labelled, parsed)
            continue
        _pairs(block, parsed)


def _unlabelled(
    block: str, instruction: str, others_labelled: bool, parsed: ParsedInstances
) -> None:
    """Text with no Input/Output label: a whole answer, if the task needs no input."""
    text = block.strip()
    if others_labelled:
        parsed.drop("unlabelled", text)
    elif instruction and needs_input(instruction):
        # The answer to a task about "the given text" is useless without that text.
        parsed.drop("bare_answer_needs_input", text)
    else:
        parsed.keep("", text)


def _pairs(block: str, parsed: ParsedInstances) -> None:
    """Input/Output pairs within one block, in either order, with field-named inputs."""
    labels = list(_LABEL.finditer(block))
    segments: list[tuple[str, str]] = []  # (kind, text); kind "free" is unlabelled text
    head = block[: labels[0].start()]
    if head.strip():
        segments.append(("free", head))
    for k, found in enumerate(labels):
        end = labels[k + 1].start() if k + 1 < len(labels) else len(block)
        segments.append((found.group(1).lower(), block[found.end() : end]))
    kinds = [kind for kind, _ in segments]
    if kinds[0] == "output" and kinds == ["output", "input"] * (len(kinds) // 2):
        # Every pair written "Output: ... / Input: ...": the order is swapped, not the meaning.
        for k in range(0, len(segments), 2):
            parsed.keep(segments[k + 1][1], segments[k][1])
        return
    pending: str | None = None  # the input waiting for its output
    field_name: str | None = None
    for k, (kind, text) in enumerate(segments):
        if kind == "output":
            output, leftover = _split_off_next_input(text, field_name)
            parsed.keep(pending or "", output)
            pending = leftover
        elif kind == "input":
            if pending is not None and pending.strip():
                # An input with no output before the next input; a free head is a preamble.
                preamble = k == 1 and segments[0][0] == "free"
                parsed.drop("preamble" if preamble else "no_output", pending)
            pending = text
        else:
            pending = text
            found = _FIELD.match(text.strip())
            field_name = found.group(1) if found else None
    if pending is not None and pending.strip():
        parsed.drop("no_output", pending)


def _split_off_next_input(text: str, field_name: str | None) -> tuple[str, str | None]:
    """An output runs to the next label; with field-named inputs ("Sentence: ..."), a line that
    opens with the same field name starts the next instance."""
    if field_name:
        found = re.search(rf"(?m)^[ \t]*{re.escape(field_name)}\s*:", text)
        if found:
            return text[: found.start()], text[found.start() :]
    return text, None
