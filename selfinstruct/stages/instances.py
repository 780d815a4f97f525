"""Stage 4: instances, output-first for classification tasks and input-first otherwise. Its
prompt, stop strings, sampling, parser, and the instance filters (stage 6).

The prompt shows a few seed tasks of the same kind with several instances each: for
classification, each class label and then an input for it (output-first, so the labels are
chosen before inputs are invented); otherwise each input and its output, and one seed that needs
no input (its output alone). A completion prompt ends with "Task: ...\\n"; the model stops before
the next "Task:" or after the example past the cap. Sampling is the paper's: greedy, presence
penalty 1.5.

The parser reads what real models write (tests/golden/): `Input:`/`Output:` pairs in any case,
`Example N` headers, numbered labels (`Input 2:`), task-specific field names (`Sentence: ...`,
kept as part of the input as the paper keeps them), `Output:` written before `Input:`, markdown
bold; class labels as the rest of their `Class label:` line with whatever follows as the input;
a bare answer with no labels as the output of a task that needs no input; when the model was cut
off, only the piece it was writing is dropped. It never raises.

The instance filters are the paper's `prepare_for_finetuning.py`: drop an instance with an empty
output, an input equal to its output, or an input or output that ends with ":" (a field header
with nothing after it: the model stopped before writing it); drop exact duplicates; drop the
whole task when one non-empty input has two different outputs; keep at most N per task.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pydantic import BaseModel

from selfinstruct.backends.base import Completion, Prompt
from selfinstruct.config import GenerateConfig, SamplingParams
from selfinstruct.coverage import Reading
from selfinstruct.keys import RequestKey
from selfinstruct.prompts import Templates
from selfinstruct.records import Instance, Rejected, Task
from selfinstruct.stages.base import Ask, Candidate, StageContext
from selfinstruct.stages.text import (
    clean_input,
    json_schema,
    one_line,
    read_json,
    unmark,
    with_json_hint,
)

NAME = "instances"
TEMPLATES = ("instances_input_first", "instances_output_first")

# -- the prompt ----------------------------------------------------------------------------


def _input_first_block(task: Task) -> str:
    # A task without input shows only its output, as in the paper's demonstrations.
    return "\n\n".join(
        (f"Input: {i.input}\n" if i.input else "") + f"Output: {i.output}" for i in task.instances
    )


def _output_first_block(task: Task) -> str:
    # Each label with its input, as the paper's output-first demonstrations show them.
    return "\n".join(_labelled(i) for i in task.instances)


def _labelled(inst: Instance) -> str:
    return f"Class label: {inst.output}" + (f"\nInput: {inst.input}" if inst.input else "")


def input_first_examples(tasks: list[Task]) -> str:
    return "\n\n".join(f"Task: {one_line(t.instruction)}\n{_input_first_block(t)}" for t in tasks)


def output_first_examples(tasks: list[Task]) -> str:
    return "\n\n".join(f"Task: {one_line(t.instruction)}\n{_output_first_block(t)}" for t in tasks)


def render(
    templates: Templates,
    shown: list[Task],
    instruction: str,
    classification: bool,
    chat: bool,
    *,
    structured: bool,
) -> Prompt:
    if classification:
        name, blocks = "instances_output_first", output_first_examples(shown)
    else:
        name, blocks = "instances_input_first", input_first_examples(shown)
    # A completion prompt ends after the task line, where the first example starts.
    prompt = templates.render(
        name, chat, ending="\n", examples=blocks, instruction=one_line(instruction)
    )
    if structured and chat:
        return with_json_hint(prompt, LABELLED_HINT if classification else INPUT_FIRST_HINT)
    return prompt


def sampling(cfg: GenerateConfig, chat: bool, classification: bool = False) -> SamplingParams:
    """The paper's instance sampling; a completion stops before the next task or past the
    cap's last example."""
    stop = () if chat else ("\nTask:", "Task:", f"Example {cfg.max_instances + 1}")
    update: dict[str, object] = {"stop": stop}
    if cfg.structured:
        update["json_schema"] = reply_schema(classification, cfg.max_instances)
    return cfg.instance_sampling.model_copy(update=update)


# -- the structured reply (--structured) ---------------------------------------------------


class _InputOutput(BaseModel):
    input: str = ""
    output: str


class _Labelled(BaseModel):
    # The label first: output-first, as the text prompt (the schema's order is the reply's).
    class_label: str
    input: str = ""


class InputFirstReply(BaseModel):
    instances: list[_InputOutput]


class LabelledReply(BaseModel):
    instances: list[_Labelled]


INPUT_FIRST_HINT = (
    'Reply with a JSON object only: its key "instances" holds a list of examples, each an '
    'object with an "input" (an empty string when the task needs none) and its "output".'
)
LABELLED_HINT = (
    'Reply with a JSON object only: its key "instances" holds a list of examples, each an '
    'object with a "class_label" and then an "input" of that class.'
)


def reply_schema(classification: bool, max_instances: int) -> str:
    # An empty input is how a task without input is written: only outputs and labels must
    # have text.
    model = LabelledReply if classification else InputFirstReply
    return json_schema(model, "instances", max_instances, may_be_empty=frozenset({"input"}))


def reply_is_valid(text: str, classification: bool) -> bool:
    return read_json(LabelledReply if classification else InputFirstReply, text) is not None


def parse_json(text: str, classification: bool, truncated: bool) -> ParsedInstances:
    """Instances from a structured reply; one that is not the schema's JSON is dropped whole
    (`truncated` when cut off)."""
    parsed = ParsedInstances()
    if classification:
        labelled = read_json(LabelledReply, text)
        pairs = None if labelled is None else [(i.input, i.class_label) for i in labelled.instances]
    else:
        plain = read_json(InputFirstReply, text)
        pairs = None if plain is None else [(i.input, i.output) for i in plain.instances]
    if pairs is None:
        parsed.drop("truncated" if truncated else "invalid_json", text or "(empty)")
        return parsed
    for given, output in pairs:
        parsed.keep(given, output)
    return parsed


# -- the parser ----------------------------------------------------------------------------


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

    def extend_last(self, more: str) -> None:
        """The last instance's output goes on in `more`."""
        last = self.instances[-1]
        output = f"{last.output}\n{more.strip()}".strip()
        self.instances[-1] = Instance(input=last.input, output=output)
        self.last_kept = True

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

# Does the task work on something it is given? Used only to decide whether unlabelled text
# can be a whole answer (an output with no input), and since that drops what the model wrote,
# only on strong evidence: a word that points at a given thing ("the following", "given",
# "above", "input"), speakers of a dialogue, or "the/this/these" with a noun for a text to
# work on ("the article", "this email") that does not name the task's own product ("Write an
# essay ... the essay"). Weak hints do not count: "this" alone ("for this year"), nouns that
# are rarely given ("the best movie", "the name").
_POINTERS = re.compile(
    r"\b(given|following|provided|below|above|attached|enclosed|input|shown|supplied|"
    r"aforementioned|(either|both|each|the two) (participants?|parties|people|persons?)|"
    r"speakers?)\b",
    re.IGNORECASE,
)
_TEXT_NOUNS = (
    r"texts?|sentences?|paragraphs?|passages?|articles?|documents?|emails?|letters?|messages?|"
    r"reviews?|tweets?|posts?|code|functions?|programs?|snippets?|scripts?|tables?|data|"
    r"datasets?|strings?|equations?|expressions?|statements?|claims?|conversations?|"
    r"dialogues?|dialogs?|transcripts?|excerpts?|lists?|words?|numbers?|arrays?|sequences?|"
    r"urls?|files?|images?|phrases?|quotes?|lyrics|poems?|story|stories|essays?|papers?|"
    r"reports?|recipes?|query|queries|blanks?|arguments?|contracts?|sets?"
)
_NAMED_TEXT = re.compile(
    r"\b(?:the|this|these|that|those)\s+"
    r"(?:[\w-]+\s+)?"  # one word between: "the news article", "these two sentences"
    rf"({_TEXT_NOUNS})\b",
    re.IGNORECASE,
)
_MAKE = r"(?:write|compose|create|generate|draft|make|design|produce|invent|come up with)"


def _refers_to_output(instruction: str, found: re.Match[str]) -> bool:
    """ "Write an essay ... the essay": the noun names what the task asks for, not an input."""
    noun = re.escape(found.group(1))
    before = instruction[: found.start()]
    introduced = re.search(
        rf"\b(?:a|an|one|some|your|own)\s+(?:[\w-]+\s+){{0,3}}{noun}\b", before, re.IGNORECASE
    )
    made = re.match(rf"\s*{_MAKE}\s*$", before, re.IGNORECASE)
    return bool(introduced or made)


def _named_inputs(instruction: str) -> list[str]:
    """The texts the instruction names as what it works on ("the article", "this email"), not
    those it asks for."""
    return [
        found.group(1)
        for found in _NAMED_TEXT.finditer(instruction)
        if not _refers_to_output(instruction, found)
    ]


def needs_input(instruction: str) -> bool:
    """Does the instruction clearly refer to something it is given (a text, a list, "the
    following")?"""
    return bool(_POINTERS.search(instruction) or _named_inputs(instruction))


# A bare answer that itself works on a text it was shown ("The original sentence contains an
# error") answers an input that is not there; one that talks about the task ("This is a
# complex task that ...") answers nothing.
_ANSWERS_UNSEEN_INPUT = re.compile(
    rf"\b(?:the|this)\s+(?:original|given|above|provided|following|input)\s+({_TEXT_NOUNS})\b",
    re.IGNORECASE,
)
_TASK_TALK = re.compile(
    r"^(?:this|the|your)\s+(?:is\s+)?(?:(?:a|an)\s+)?(?:[\w-]+\s+){0,3}(?:task|instruction)s?\b",
    re.IGNORECASE,
)


def _cut_at_next_task(text: str) -> str:
    return _NEXT_TASK.split(text, maxsplit=1)[0]


def parse(
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
    first_kept = len(parsed.instances)
    bare: list[int] = []  # labels written with no input after them
    for k, found in enumerate(starts):
        end = starts[k + 1].start() if k + 1 < len(starts) else len(body)
        label, rest = _label_and_rest(body[found.end() : end])
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
        if not clean_input(given):
            bare.append(len(parsed.instances))
        parsed.keep(given, label)
    ours = parsed.instances[first_kept:]
    if bare and any(inst.input for inst in ours):
        # Where the other labels have inputs, a label with none is an example the model
        # stopped writing ("Class label: No" and then the next task), not an answer.
        last = len(parsed.instances) - 1
        for index in reversed(bare):
            parsed.instances.pop(index)
        parsed.dropped.extend(("no_input", ours[i - first_kept].output) for i in bare)
        parsed.last_kept = parsed.last_kept and bare[-1] != last


def _label_and_rest(chunk: str) -> tuple[str, str]:
    """The class label after "Class label:" (on its line, or alone on the next one) and the
    text after it. "Class label:\nInput: ..." has no label: the input line is not one."""
    label, _, rest = chunk.lstrip(" \t").partition("\n")
    if not label.strip() and rest.strip():
        ahead = rest.lstrip()
        first, _, after = ahead.partition("\n")
        if not _LABEL.match(first) and not _CLASS_LABEL.match(first):
            label, rest = first, after
    return unmark(label).strip(), rest


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
    fielded = None if labelled else _fielded(blocks, instruction)
    if fielded:
        for given, output in fielded:
            parsed.keep(given, output)
        return
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
    elif (instruction and needs_input(instruction)) or _ANSWERS_UNSEEN_INPUT.search(text):
        # The answer to a task about "the given text" is useless without that text.
        parsed.drop("bare_answer_needs_input", text)
    elif _TASK_TALK.match(text):
        parsed.drop("not_an_answer", text)
    else:
        parsed.keep("", text)


_FIELD_LINE = re.compile(
    r"^[ \t]*(?:[-*][ \t]+)?(?:\*\*|__)?([A-Z][\w' -]{0,30}?)(?:\*\*|__)?[ \t]*:"
    r"(?:\*\*|__)?[ \t]*(.*)$"
)


def _fields(text: str) -> list[tuple[str, str]] | None:
    """ "Name: value" lines (a line without a name continues the value before it), or None
    when the text does not open with a field."""
    fields: list[tuple[str, str]] = []
    for line in text.strip().splitlines():
        found = _FIELD_LINE.match(line)
        if found:
            fields.append((found.group(1).strip(), found.group(2).strip()))
        elif not fields:
            return None
        elif line.strip():
            name, value = fields[-1]
            fields[-1] = (name, f"{value}\n{line.strip()}".strip())
    return fields or None


def _stem(name: str) -> str:
    # "Speaker 1" and "Speaker 2", "Person A" and "Person B": one kind of field, numbered.
    return re.sub(r"(\s+(\d+|[A-Z])|'s\b.*)$", "", name).lower()


def _given_things(instruction: str) -> set[str]:
    """What the instruction says it works on: "the word", "the given sentence" -> {"word",
    "sentence"}."""
    found = set(_named_inputs(instruction))
    found |= set(re.findall(r"\b(?:given|following|provided|input)\s+([\w-]+)", instruction, re.I))
    return {word.lower().rstrip("s") for word in found}


def _fielded(blocks: list[str], instruction: str) -> list[tuple[str, str]] | None:
    """Examples written with the task's own field names and no Input/Output labels
    ("Word: Happy\nAntonym: Sad"): each group of fields is one instance, its last field the
    output and the fields before it the input (names kept, as the paper keeps them). Fields of
    two or more kinds, and either two or more groups with the same fields, or one group whose
    first field is what the instruction works on ("the word"): a lone group is otherwise as
    likely one answer in parts ("Structure: ...\nContent: ..."). Numbered fields of one kind
    ("Speaker 1:", "Speaker 2:") are a list, not fields."""
    groups: list[list[tuple[str, str]]] = []
    for block in blocks:
        if not block.strip():
            continue
        fields = _fields(block)
        if fields is None:
            return None
        first = fields[0][0].lower()
        for name, value in fields:
            if name.lower() == first:  # so each block opens a group of its own
                groups.append([])
            groups[-1].append((name, value))
    shapes = {tuple(name.lower() for name, _ in group) for group in groups}
    if not groups or len(shapes) != 1:
        return None
    (shape,) = shapes
    if len(shape) < 2 or len({_stem(name) for name in shape}) < 2:
        return None
    if len(groups) == 1 and _stem(shape[0]).rstrip("s") not in _given_things(instruction):
        return None
    return [
        ("\n".join(f"{name}: {value}" for name, value in group[:-1]), group[-1][1])
        for group in groups
    ]


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
        if kind == "output" and _continues_output(segments, k, pending, parsed):
            # "Input: x\nOutput: part 1\nOutput: part 2": one answer written in parts.
            output, pending = _split_off_next_input(text, field_name)
            parsed.extend_last(output)
        elif kind == "output":
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


_NUMBERED_LINE = re.compile(r"^(?:step|part|item)?\s*(\d{1,2})\s*[.):]", re.IGNORECASE)


def _continues_output(
    segments: list[tuple[str, str]], k: int, pending: str | None, parsed: ParsedInstances
) -> bool:
    """Does output segment `k` go on with the answer before it? Only when it follows on the
    next line (a blank line between starts another example, as the prompt writes them), no
    input came between, and either that answer has an input (a second answer to one input is
    a part of it, or the task would be dropped for conflicting outputs) or it is visibly
    unfinished: it ends with ":" or the new piece continues its numbering ("Step 1: ..." then
    "Step 2: ..."). Answers of a task without input written one "Output:" after another are
    separate."""
    if k == 0 or segments[k - 1][0] != "output" or pending is not None:
        return False
    if segments[k - 1][1].rstrip(" \t").endswith("\n\n"):
        return False
    if not (parsed.last_kept and parsed.instances):
        return False
    last = parsed.instances[-1]
    if last.input:
        return True
    if last.output.rstrip().endswith(":"):
        return True
    before = _NUMBERED_LINE.match(
        last.output.strip().splitlines()[-1] if last.output.strip() else ""
    )
    after = _NUMBERED_LINE.match(segments[k][1].strip())
    return bool(before and after and int(after.group(1)) == int(before.group(1)) + 1)


def _split_off_next_input(text: str, field_name: str | None) -> tuple[str, str | None]:
    """An output runs to the next label; with field-named inputs ("Sentence: ..."), a line that
    opens with the same field name starts the next instance."""
    if field_name:
        found = re.search(rf"(?m)^[ \t]*{re.escape(field_name)}\s*:", text)
        if found:
            return text[: found.start()], text[found.start() :]
    return text, None


# -- the instance filters (stage 6) --------------------------------------------------------


@dataclass
class InstanceVerdict:
    """What the instance filters kept, what they dropped (reason, instance), and, when the whole
    task goes, why."""

    kept: list[Instance] = field(default_factory=list)
    dropped: list[tuple[str, Instance]] = field(default_factory=list)
    task_reason: str | None = None


def instance_problem(inst: Instance) -> str | None:
    """Why one instance is unusable on its own, or None."""
    given, output = inst.input.strip(), inst.output.strip()
    if not output:
        return "empty_output"
    if given and given == output:
        return "input_is_output"
    if given.endswith(":") or output.endswith(":"):
        return "field_header_only"
    return None


def filter_instances(instances: list[Instance], cap: int) -> InstanceVerdict:
    """The paper's instance filters over one task's instances, in order."""
    verdict = InstanceVerdict()
    outputs_by_input: dict[str, set[str]] = {}
    seen: set[tuple[str, str]] = set()
    for inst in instances:
        problem = instance_problem(inst)
        key = (inst.input.strip(), inst.output.strip())
        if problem is None and key in seen:
            problem = "duplicate"
        if problem is not None:
            verdict.dropped.append((problem, inst))
            continue
        seen.add(key)
        outputs_by_input.setdefault(key[0], set()).add(key[1])
        verdict.kept.append(inst)
    if any(len(outs) > 1 for given, outs in outputs_by_input.items() if given):
        verdict.task_reason = "same_input_different_outputs"
    elif not verdict.kept:
        verdict.task_reason = "no_valid_instances"
    if verdict.task_reason is not None:
        verdict.kept = []
        return verdict
    verdict.dropped.extend(("over_cap", inst) for inst in verdict.kept[cap:])
    verdict.kept = verdict.kept[:cap]
    return verdict


# -- the stage: a task, or why not ---------------------------------------------------------


def read(
    completion: Completion,
    *,
    instruction: str,
    classification: bool,
    max_instances: int,
    request_id: str,
    structured: bool,
) -> tuple[list[Instance] | None, list[Rejected], Reading | None]:
    """The instances kept for a task (None: the task is dropped), every drop recorded (the
    task's own when it goes, each lost instance's when it stays), and how much of the
    completion the parser read (None: the request failed)."""
    if completion.finish_reason == "error":
        failed = Rejected.of(
            NAME, "request_failed", instruction, request_id, error=completion.error or ""
        )
        return None, [failed], None
    truncated = completion.finish_reason == "length"
    if structured:
        parsed = parse_json(completion.text, classification, truncated)
    else:
        parsed = parse(completion.text, classification, truncated, instruction)
    unread = tuple(reason for reason, _ in parsed.dropped) or (
        () if parsed.instances else ("no_text" if not completion.text.strip() else "nothing_found",)
    )
    reading = Reading(NAME, len(parsed.instances), unread)
    verdict = filter_instances(parsed.instances, max_instances)
    if verdict.task_reason is not None:
        dropped = [reason for reason, _ in parsed.dropped + verdict.dropped]
        return (
            None,
            [
                Rejected.of(
                    NAME,
                    verdict.task_reason,
                    instruction,
                    request_id,
                    raw=completion.text[:2000],
                    dropped=dropped,
                )
            ],
            reading,
        )
    # The task is kept; each instance it lost is still accounted for.
    rejected = [
        Rejected.of("instance", reason, instruction, request_id, raw=raw[:2000])
        for reason, raw in parsed.dropped
    ]
    rejected += [
        Rejected.of(
            "instance",
            reason,
            instruction,
            request_id,
            input=inst.input[:2000],
            output=inst.output[:2000],
        )
        for reason, inst in verdict.dropped
    ]
    return verdict.kept, rejected, reading


class InstanceStage:
    """Stage 4 for the loop: the candidate's instances (output-first for classification), and
    with valid ones, the task."""

    name = NAME

    def ask(self, candidate: Candidate, ctx: StageContext) -> Ask:
        text, labelled = candidate.found.instruction, bool(candidate.is_classification)
        shown = ctx.demos.for_instances(text, labelled, ctx.options.instance_examples)
        prompt = render(ctx.templates, shown, text, labelled, ctx.chat, structured=ctx.structured)
        return Ask(
            prompt,
            sampling(ctx.options, ctx.chat, labelled),
            lambda reply: reply_is_valid(reply, labelled),
            instruction=text,
            classification=candidate.is_classification,
        )

    def read(
        self, candidate: Candidate, completion: Completion, key: RequestKey, ctx: StageContext
    ) -> bool:
        found = candidate.found
        kept, rejected, reading = read(
            completion,
            instruction=found.instruction,
            classification=bool(candidate.is_classification),
            max_instances=ctx.options.max_instances,
            request_id=key.text,
            structured=ctx.structured,
        )
        candidate.readings += [reading] if reading else []
        candidate.rejected.extend(rejected)
        if kept is not None:
            candidate.task = Task(
                id=f"machine_{candidate.prompt}_{candidate.index}",
                instruction=found.instruction,
                instances=kept,
                is_classification=candidate.is_classification,
                source="machine",
                round=candidate.prompt,
                request_id=candidate.source.text,
                most_similar=found.provenance.most_similar,
                avg_similarity_score=found.provenance.avg_similarity,
                model=ctx.model,
            )
        return kept is not None


STAGE = InstanceStage()
