"""Prompt templates, and the few-shot seed tasks that go into them.

Templates live in `data/prompts/` as plain text with `{placeholders}`; each stage has a
completion-style template for base models and a `.chat` one for chat models. What goes into a
template, and how its answer is read back, belongs to the stage (`selfinstruct/stages/`); this
module only loads the text and chooses demonstrations.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from selfinstruct.backends.base import Prompt
from selfinstruct.config import PROMPTS_DIR
from selfinstruct.errors import ConfigError
from selfinstruct.records import Task
from selfinstruct.similarity import RougeLIndex
from selfinstruct.tokens import TokenizerName


@dataclass(frozen=True)
class Templates:
    """The text of the named templates, completion and chat variants."""

    completion: dict[str, str]
    chat: dict[str, str]

    @classmethod
    def load(cls, names: Sequence[str], directory: Path | None = None) -> Templates:
        directory = directory or PROMPTS_DIR
        completion, chat = {}, {}
        for name in names:
            for variant, target in (("", completion), (".chat", chat)):
                path = directory / f"{name}{variant}.txt"
                try:
                    target[name] = path.read_text(encoding="utf-8")
                except OSError as exc:
                    raise ConfigError(
                        f"{path}: cannot read prompt template ({exc.strerror}); point "
                        "--prompts-dir at a folder with every stage's template"
                    ) from None
        return cls(completion, chat)

    def digests(self) -> dict[str, str]:
        """sha256 of each template's text, by file name: what a dataset card records."""
        import hashlib

        return {
            f"{name}{variant}.txt": hashlib.sha256(text.encode()).hexdigest()
            for variant, texts in (("", self.completion), (".chat", self.chat))
            for name, text in sorted(texts.items())
        }

    def render(self, name: str, chat: bool, ending: str = "", **values: object) -> Prompt:
        """The filled template: one user message for chat, else text followed by `ending`
        (where a completion prompt leaves the model to write)."""
        template = (self.chat if chat else self.completion)[name]
        text = template.format(**values).rstrip("\n")
        if chat:
            return [{"role": "user", "content": text}]
        return text + ending


# -- choosing the few-shot examples --------------------------------------------------------

DemoChoice = Literal["similar", "random"]


class Demonstrations:
    """Few-shot seed tasks for the classification and instance prompts.

    `similar` (default) shows the seeds most like the task at hand (by ROUGE-L), nearest last:
    small models copy the format and the decision of a close example far better than of a
    random one (SmolLM2-135M, 60 held-out seeds: 14 of 15 classification tasks recognised
    with 2 false alarms, against 7 of 15 with 12 false alarms for a fixed random set; see
    bench/BENCHMARKS.md). `random` is one fixed seeded sample for every task, as the paper's
    fixed prompts. Both depend only on the seed file, so a resumed run sees the same examples.
    """

    def __init__(
        self, seeds: list[Task], choice: DemoChoice, seed: int, tokenizer: TokenizerName
    ) -> None:
        self.choice = choice
        self.classification = [t for t in seeds if t.is_classification]
        self.other = [t for t in seeds if t.is_classification is False]
        self._index = RougeLIndex(threshold=1.0, tokenizer=tokenizer)
        for task in seeds:
            self._index.add(task.instruction)
        self._seeds = seeds
        self._position = {id(t): k for k, t in enumerate(seeds)}
        self._rng_seed = seed
        # Each task is asked about twice (classification, then instances), with hundreds of
        # other tasks' questions between the two when many are in flight: its scores are kept
        # until then with their ranking, the oldest dropped first: arrays of 16 MB at most
        # (about 19 MB with Python's overhead; 5,800 tasks at 181 seeds, and never fewer than
        # 256, so 20 MB at 5,000 seeds). An evicted task's scores are made again, the same.
        self._kept: OrderedDict[str, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._kept_max = max(256, (16 << 20) // (16 * max(1, len(seeds))))
        # The instance prompts' pools depend only on the seeds.
        shows_outputs = [t for t in self.classification if len({i.output for i in t.instances}) > 1]
        self._out_first = shows_outputs or self.classification
        with_input = [t for t in self.other if len(t.instances) > 1 and t.instances[0].input]
        self._in_first = with_input or self.other
        self._no_input = [t for t in self.other if t.instances and not t.instances[0].input]
        # Which seed positions each pool holds (each seed a distinct object, one per line of
        # the seed file); the pools never change after this.
        pools = (self.classification, self.other, self._out_first, self._in_first, self._no_input)
        self._masks = {id(pool): self._mask_of(pool) for pool in pools}

    def _scores(self, instruction: str) -> list[float]:
        """ROUGE-L of `instruction` against each seed, as a list: the sort keys read it item
        by item, far faster from a list than from an array."""
        return self._kept_for(instruction)[0].tolist()

    def _kept_for(self, instruction: str) -> tuple[np.ndarray, np.ndarray]:
        """The scores of `instruction` against each seed, and the seeds' positions most
        similar first (ties to the earlier seed, so the choice never depends on set or dict
        order)."""
        kept = self._kept.get(instruction)
        if kept is None:
            scores = self._index.scores(instruction)
            ranking = np.lexsort((np.arange(len(scores)), -scores))
            kept = self._kept[instruction] = (scores, ranking)
            if len(self._kept) > self._kept_max:
                self._kept.popitem(last=False)
        return kept

    def _mask_of(self, pool: list[Task]) -> np.ndarray:
        mask = np.zeros(len(self._seeds), dtype=bool)
        mask[[self._position[id(t)] for t in pool]] = True
        return mask

    def _ranked(self, instruction: str, pool: list[Task], k: int, salt: str) -> list[Task]:
        """k tasks from `pool`, least similar first (so the nearest is next to the question)."""
        if k <= 0 or not pool:
            return []
        if self.choice == "random":
            return random.Random(f"{self._rng_seed}:{salt}").sample(pool, min(k, len(pool)))
        ranking = self._kept_for(instruction)[1]
        chosen = ranking[self._masks[id(pool)][ranking]][:k]
        return [self._seeds[i] for i in chosen[::-1].tolist()]

    def for_classification(self, instruction: str, k: int) -> list[Task]:
        """k/2 classification and k/2 other seeds: both answers are always shown."""
        half = k // 2
        yes = self._ranked(instruction, self.classification, half, "clf-yes")
        no = self._ranked(instruction, self.other, k - half, "clf-no")
        shown = yes + no
        if self.choice == "random":
            random.Random(f"{self._rng_seed}:clf-order").shuffle(shown)
            return shown
        scores = self._scores(instruction)
        return sorted(shown, key=lambda t: (scores[self._position[id(t)]], -self._position[id(t)]))

    def for_instances(self, instruction: str, classification: bool, k: int) -> list[Task]:
        """Seeds of the same kind that show several instances; for input-first prompts one of
        them needs no input, so both shapes of answer are shown."""
        if classification:
            return self._ranked(instruction, self._out_first, k, "out-first")
        shown = self._ranked(instruction, self._in_first, k - 1, "in-first")
        shown += self._ranked(instruction, self._no_input, 1, "in-first-none")
        if self.choice == "similar":
            scores = self._scores(instruction)
            shown.sort(key=lambda t: (scores[self._position[id(t)]], -self._position[id(t)]))
        return shown
