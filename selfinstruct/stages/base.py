"""What every stage is to the loop: one protocol, and the items that travel through the stages.

A stage builds the request for an item (`ask`: its prompt, its sampling parameters, structured
or not, taken from the context it is given, and the validator of a structured reply) and reads
the reply into the item (`read`), deciding whether the item goes on. The first stage's item is an
instruction prompt (`Slot`), whose reply gives the candidates; every later stage's item is one
`Candidate`, and the last one makes it a task or drops it. The loop knows the stages only
through this protocol and the list in `stages/__init__.py`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar, overload

from selfinstruct.backends.base import Completion, Prompt
from selfinstruct.config import GenerateConfig, SamplingParams
from selfinstruct.coverage import Reading
from selfinstruct.keys import RequestKey
from selfinstruct.records import Rejected, Task

if TYPE_CHECKING:
    from selfinstruct.prompts import Demonstrations, Templates
    from selfinstruct.rules import RuleFilter
    from selfinstruct.similarity import Provenance, RougeLIndex


@dataclass(frozen=True)
class StageContext:
    """What the stages are given once per run: the options and what the run loaded."""

    options: GenerateConfig
    templates: Templates
    demos: Demonstrations
    seeds: list[Task]
    rules: RuleFilter
    index: RougeLIndex  # the novelty pool; the first stage adds to it, in prompt order
    chat: bool
    model: str

    @property
    def structured(self) -> bool:
        return self.options.structured


@dataclass(frozen=True)
class Ask:
    """One request, as a stage builds it."""

    prompt: Prompt
    params: SamplingParams
    # With --structured: the reply's validator; an invalid reply is asked again.
    check: Callable[[str], bool] | None = None
    # Journaled with the reply, so a journal can be read again on its own.
    instruction: str | None = None
    classification: bool | None = None


@dataclass
class Found:
    """A new instruction that passed the rules and was novel enough to join the pool."""

    instruction: str
    # Its list's provenance, being computed beside the loop (`RougeLIndex.provenance`), and
    # this instruction's place in it; read when the candidate becomes a task.
    provenances: Future[list[Provenance]]
    position: int

    @property
    def provenance(self) -> Provenance:
        return self.provenances.result()[self.position]


@dataclass
class Candidate:
    """A new instruction on its way through the later stages, until it is decided."""

    prompt: int
    index: int
    found: Found
    source: RequestKey  # the instruction prompt's request that gave it
    is_classification: bool | None = None
    task: Task | None = None
    rejected: list[Rejected] = field(default_factory=list)
    readings: list[Reading] = field(default_factory=list)
    decided: bool = False

    def key(self, stage: str) -> RequestKey:
        return RequestKey(self.prompt, stage, self.index)


@dataclass
class Slot:
    """One instruction prompt and everything that follows from it, until it is committed."""

    prompt: int
    examples: list[str]  # the instructions it shows; the model continues at len + 1
    classification_only: bool = False
    completion: Completion | None = None
    processed: bool = False
    rejected: list[Rejected] = field(default_factory=list)
    reading: Reading | None = None
    candidates: list[Candidate] = field(default_factory=list)

    @property
    def shown(self) -> int:
        return len(self.examples)

    def key(self, stage: str) -> RequestKey:
        return RequestKey(self.prompt, stage)


T = TypeVar("T")


class Prefix(Sequence[T], Generic[T]):
    """The first `length` items of a list that only grows, without copying them (a prompt
    samples a few machine tasks from a pool of thousands)."""

    def __init__(self, items: list[T], length: int) -> None:
        self._items, self._length = items, length

    def __len__(self) -> int:
        return self._length

    @overload
    def __getitem__(self, index: int) -> T: ...
    @overload
    def __getitem__(self, index: slice) -> list[T]: ...
    def __getitem__(self, index: int | slice) -> T | list[T]:
        if isinstance(index, slice):
            return self._items[: self._length][index]
        if not -self._length <= index < self._length:
            raise IndexError(index)
        return self._items[index % self._length]


Item = TypeVar("Item", contravariant=True)


class Stage(Protocol[Item]):
    """A Self-Instruct stage, as the loop drives it."""

    name: str

    def ask(self, item: Item, ctx: StageContext) -> Ask:
        """The request for `item`."""
        ...

    def read(self, item: Item, completion: Completion, key: RequestKey, ctx: StageContext) -> bool:
        """Read the reply into `item`; True when it goes on to the next stage. A candidate
        that does not go on is decided (dropped, or a task after the last stage)."""
        ...
