"""A deterministic backend for tests and `--dry-run`: replies from rules or a queue.

It records every prompt it was sent (`calls`), so tests can check prompt assembly. With no
replies given, it answers each stage of the Self-Instruct loop with canned, well-formed text
built from a counter, so a dry run exercises parsing, filtering and the run directory without a
model.
"""

from __future__ import annotations

import hashlib
import re
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from selfinstruct.backends.base import BackendStats, Completion, Prompt, SamplingParams, Usage
from selfinstruct.config import Options

Reply = str | Completion
Rule = Callable[[str], Reply | None]

# Canned instructions are built from independent slots, each indexed by the counter through a
# different stride, so two of them rarely share more than a couple of words.
_SLOTS = [
    [
        "Write",
        "Draft",
        "Explain",
        "Describe",
        "Summarize",
        "Outline",
        "Compare",
        "Invent",
        "Plan",
        "Evaluate",
        "Rewrite",
        "Classify",
    ],
    [
        "a cheerful",
        "three concise",
        "an honest",
        "a practical",
        "two surprising",
        "a detailed",
        "several creative",
        "a balanced",
        "one persuasive",
        "four quick",
        "a formal",
    ],
    [
        "notes",
        "reasons",
        "steps",
        "questions",
        "arguments",
        "tips",
        "examples",
        "stories",
        "warnings",
        "headlines",
        "riddles",
        "slogans",
        "lessons",
    ],
    [
        "about volcanoes",
        "on tax forms",
        "covering chess openings",
        "regarding sourdough",
        "around solar panels",
        "concerning jazz",
        "on bird migration",
        "about spreadsheets",
        "for city parks",
        "about password managers",
        "on tide pools",
        "about knitting",
        "about electric buses",
        "on coral reefs",
        "about bicycle repair",
        "on ancient Rome",
        "about wind turbines",
    ],
    [
        "for teenagers",
        "for retirees",
        "for new managers",
        "for nurses",
        "for farmers",
        "for tourists",
        "for engineers",
        "for librarians",
        "for parents",
        "for chefs",
    ],
    [
        "using plain words",
        "in under fifty words",
        "with a memorable example",
        "without jargon",
        "as a numbered list",
        "with one statistic",
        "in a friendly voice",
    ],
]
_STRIDES = [1, 5, 7, 11, 13, 17]


def _canned_instruction(k: int) -> str:
    words = [
        slot[(k * stride + k // len(slot)) % len(slot)]
        for slot, stride in zip(_SLOTS, _STRIDES, strict=True)
    ]
    text = " ".join(words) + "."
    if words[0] == "Classify":
        return f"Classify the given sentence {words[3]} as positive or negative."
    return text


def _text_of(prompt: Prompt) -> str:
    if isinstance(prompt, str):
        return prompt
    return "\n".join(m.get("content", "") for m in prompt)


def _key(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:6], "big")


def canned_reply(text: str) -> str:
    """A well-formed reply for any stage of the loop; a pure function of the prompt, so a
    resumed dry run gets exactly the replies an uninterrupted one would."""
    tail = text[-600:]
    if "valid_task: yes or no" in tail:
        return _canned_verdict(text)
    if "Is it classification?" in tail:
        task = tail.rsplit("Task:", 1)[-1]
        return " Yes" if re.search(r"\b(Classify|positive or negative)\b", task) else " No"
    if "Task:" in tail[-300:]:
        task = tail.rsplit("Task:", 1)[-1]
        if "Classify" in task:
            return (
                "\nClass label: Positive\nInput: I loved every minute of it.\n"
                "Class label: Negative\nInput: It was a waste of an afternoon.\n"
            )
        k = _key(text) % 1000
        return (
            f"\nInput: \nOutput: A careful answer, number {k}.\n\n"
            f"Input: a second case\nOutput: Another answer, number {k}.\n"
        )
    base = _key(text) % 100_000 * 4
    lines = [_canned_instruction(base + i) for i in range(4)]
    start = _next_number(text)
    return (
        " "
        + "".join(f"{line}\n{start + i + 1}. " for i, line in enumerate(lines)).rsplit("\n", 1)[0]
    )


def _canned_verdict(text: str) -> str:
    """An audit judge's reply: a task is valid unless its instruction is a few words; one in
    three outputs is judged wrong (by a hash of the prompt, so resumes agree)."""
    instruction = text.split("Instruction:", 1)[-1].split("\n", 1)[0]
    valid = "yes" if len(instruction.split()) >= 4 else "no"
    output = "no" if _key(text) % 3 == 0 else "yes"
    return f"valid_task: {valid}\ninput_ok: yes\noutput_ok: {output}"


def _next_number(text: str) -> int:
    found = re.findall(r"(?m)^\s*(\d+)\.", text)
    return int(found[-1]) if found else 1


class ScriptedBackend:
    """Replies from a queue (first) or answering rules (in order); records every prompt in
    `calls`.

    `submit` answers at once, in the caller's thread: replies are instant, so a test sees the
    loop's logic without timing in the way.
    """

    name = "scripted"

    def __init__(
        self,
        replies: Iterable[Reply] = (),
        answers: Sequence[Rule] = (),
        *,
        chat: bool = False,
        model: str = "scripted",
        canned: bool = True,
    ) -> None:
        self.queue: deque[Reply] = deque(replies)
        self.answers = list(answers)
        if canned:
            self.answers.append(canned_reply)
        self.chat = chat
        self.model = model
        self.calls: list[tuple[Prompt, SamplingParams]] = []
        self._requests = 0

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[Completion]:
        out = []
        for prompt in prompts:
            self.calls.append((prompt, params))
            out.append(self._reply(prompt))
        return out

    def submit(
        self, request_id: str, prompt: Prompt, params: SamplingParams, priority: Any = ()
    ) -> Future[Completion]:
        future: Future[Completion] = Future()
        try:
            future.set_result(self.generate([prompt], params)[0])
        except LookupError as exc:  # no reply scripted: the test gets it from the future
            future.set_exception(exc)
        self._requests += 1
        return future

    def stats(self) -> BackendStats:
        return BackendStats(requests=self._requests)

    def _reply(self, prompt: Prompt) -> Completion:
        reply: Reply | None = self.queue.popleft() if self.queue else None
        text = _text_of(prompt)
        for rule in self.answers:
            if reply is not None:
                break
            reply = rule(text)
        if reply is None:
            raise LookupError("the scripted backend has no reply for this prompt")
        if isinstance(reply, Completion):
            return reply
        usage = Usage(prompt_tokens=len(text.split()), completion_tokens=len(reply.split()))
        return Completion(text=reply, finish_reason="stop", usage=usage)

    def close(self) -> None:
        pass


def open_scripted(
    model: str | None, options: Options, chat: bool | None, run_dir: Path | None
) -> ScriptedBackend:
    return ScriptedBackend(chat=bool(chat))
