"""Stage 3: is the new instruction a classification task? Its prompt, sampling and parser.

A few-shot yes/no prompt, as the paper's: seed tasks each followed by "Is it classification?"
and the answer, then the new task and the question. A completion prompt ends on the question
line, so the answer is written on it (a newline there would meet the "\\n" stop first). Greedy,
3 tokens, stopping at the end of the line; a chat model may answer in a short sentence, so it
gets a few more tokens. An answer that cannot be read counts as "no", as in the paper.
"""

from __future__ import annotations

import re

from pydantic import BaseModel

from selfinstruct.backends.base import Completion, Prompt
from selfinstruct.config import SamplingParams
from selfinstruct.coverage import Reading
from selfinstruct.keys import RequestKey
from selfinstruct.prompts import Templates
from selfinstruct.records import Rejected, Task
from selfinstruct.stages.base import Ask, Candidate, StageContext
from selfinstruct.stages.text import json_schema, one_line, read_json, with_json_hint

NAME = "classification"
TEMPLATES = ("is_classification",)


def examples(tasks: list[Task]) -> str:
    return "\n\n".join(
        f"Task: {one_line(t.instruction)}\nIs it classification? "
        f"{'Yes' if t.is_classification else 'No'}"
        for t in tasks
    )


def render(
    templates: Templates, shown: list[Task], instruction: str, chat: bool, *, structured: bool
) -> Prompt:
    prompt = templates.render(
        "is_classification", chat, examples=examples(shown), instruction=one_line(instruction)
    )
    return with_json_hint(prompt, JSON_HINT) if structured and chat else prompt


def sampling(chat: bool, *, structured: bool) -> SamplingParams:
    if structured:
        return SamplingParams(temperature=0.0, top_p=1.0, max_tokens=24, json_schema=REPLY_SCHEMA)
    return SamplingParams(
        temperature=0.0,
        top_p=1.0,
        max_tokens=16 if chat else 3,
        stop=() if chat else ("\n", "Task"),
    )


# -- the structured reply (--structured) ---------------------------------------------------


class ClassificationAnswer(BaseModel):
    is_classification: bool


JSON_HINT = (
    'Reply with a JSON object only: {"is_classification": true} if it is a classification '
    'task, else {"is_classification": false}.'
)
REPLY_SCHEMA = json_schema(ClassificationAnswer)


def reply_is_valid(text: str) -> bool:
    return read_json(ClassificationAnswer, text) is not None


# "No problem" and "no worries" are pleasantries, not answers.
_LEADING_ANSWER = re.compile(r"^[\W_]*(yes|no)\b(?![ \t]+(problem|worries)\b)", re.IGNORECASE)
# "Is it classification? Yes" echoed from the examples, or "The answer is no."
_STATED_ANSWER = re.compile(r"(?:classification\?|the answer is:?)\s*\W*(yes|no)\b", re.IGNORECASE)
# What a verdict talks about: the task, its output, its labels.
_ABOUT_THE_TASK = re.compile(
    r"classif|categor|label|\bclass|\boptions?\b|\bchoices?\b|\boutputs?\b|\banswers? (is|are)\b|"
    r"\b(it|this|that)(\s+task)?\s*(is|'s|has|asks|needs|requires)\b|\bbecause\b|\bsince\b",
    re.IGNORECASE,
)
# The shape of a reply that takes the prompt for small talk, whatever its words: the speaker
# commits to doing something ("I can ...", "I'll ...", "let me ..."), or turns to the listener
# with a request or a question ("send me ...", "please ...", "let me know", "...?"). Such a
# "Yes" agrees to talk; it says nothing about the task.
_COMMITS = re.compile(
    r"\b(i\s*(can|could|will|would|shall|'d|'ll|am|'m)|we\s*(can|could|will|'ll))\b|"
    r"\blet(\s+me|'s|\s+us)\b|\bhappy to\b|\bglad to\b|\bhow can i\b",
    re.IGNORECASE,
)
_ASKS = re.compile(
    r"\b(send|give|show|share|provide|tell|paste)\s+(me|us)\b|\bplease\b|\bfeel free\b|"
    r"\bgo ahead\b|\bask away\b|\blet me know\b|\byou('d| would) like\b|\bwhat (do|would) you\b",
    re.IGNORECASE,
)
_NEGATED = re.compile(r"^(it|this|this task|that)\s+(is not|isn't)\b", re.IGNORECASE)
_AFFIRMED = re.compile(r"^(it|this|this task|that)\s+is\s+(a\s+)?classification\b", re.IGNORECASE)


# A verdict said again in the first person ("Yes, I'd say so"), and the pleasantries that close
# a reply after its answer ("Let me know if you need anything else!"): neither is an offer.
_CONFIRMS = re.compile(r"\bi\s*('d|'m|\s+would|\s+do)?\s*(say|think|believe|guess)\s+so\b", re.I)
_SIGN_OFF = re.compile(
    r"(let me know if|hope (this|that|it) helps|feel free to (ask|reach out)|anything else|"
    r"if you (have|need) (any )?(more|other|further))[^.!?\n]*[.!?]*",
    re.IGNORECASE,
)


def offers(rest: str) -> bool:
    """Does what follows a leading Yes/No agree to talk instead of judging the task? A reply
    that commits the speaker or asks something of the listener, and never mentions the task
    (a closing pleasantry after the answer does not count)."""
    if _ABOUT_THE_TASK.search(rest) or _CONFIRMS.search(rest):
        return False
    rest = _SIGN_OFF.sub("", rest)
    return bool(_COMMITS.search(rest) or _ASKS.search(rest) or "?" in rest)


def parse(text: str) -> bool | None:
    """Yes -> True, No -> False, unclear -> None (the caller treats that as "no").

    Base models answer "Yes"/"No"; chat models sometimes answer in a sentence ("This is not a
    classification task.", "The answer is yes.") or echo the question before answering. A
    sentence that only restates the definition ("A task is a classification task when ...")
    is no answer, nor is a "Yes" shaped as an offer (see `offers`).
    """
    stripped = text.strip()
    leading = _LEADING_ANSWER.match(stripped)
    if leading:
        if offers(stripped[leading.end() :]):
            return None
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


def read(
    completion: Completion, instruction: str, request_id: str, *, structured: bool
) -> tuple[bool | None, Rejected | None, Reading | None]:
    """Whether the task is classification (unreadable: False, as in the paper), or, when the
    request failed, the reject that drops the task; and whether the answer could be read."""
    if completion.finish_reason == "error":
        failed = Rejected.of(
            NAME, "request_failed", instruction, request_id, error=completion.error or ""
        )
        return None, failed, None
    if structured:
        reply = read_json(ClassificationAnswer, completion.text)
        answer = None if reply is None else reply.is_classification
        unread: tuple[str, ...] = () if reply is not None else ("invalid_json",)
    else:
        answer = parse(completion.text)
        unread = () if answer is not None else ("no_yes_or_no",)
    return bool(answer), None, Reading(NAME, int(answer is not None), unread)


class ClassificationStage:
    """Stage 3 for the loop: is the candidate a classification task? An unread answer is
    "no" (the paper's rule); a failed request drops the candidate."""

    name = NAME

    def ask(self, candidate: Candidate, ctx: StageContext) -> Ask:
        text = candidate.found.instruction
        shown = ctx.demos.for_classification(text, ctx.options.classification_examples)
        prompt = render(ctx.templates, shown, text, ctx.chat, structured=ctx.structured)
        params = sampling(ctx.chat, structured=ctx.structured)
        return Ask(prompt, params, reply_is_valid, instruction=text)

    def read(
        self, candidate: Candidate, completion: Completion, key: RequestKey, ctx: StageContext
    ) -> bool:
        answer, failed, reading = read(
            completion, candidate.found.instruction, key.text, structured=ctx.structured
        )
        candidate.readings += [reading] if reading else []
        if failed is not None:
            candidate.rejected.append(failed)
            return False
        candidate.is_classification = answer
        return True


STAGE = ClassificationStage()
