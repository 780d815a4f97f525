"""A request's identity: which instruction prompt it serves, at which stage, for which candidate.

Every request the loop makes is named by a `RequestKey`, built here and nowhere else. The key is
deterministic (the same run asks the same keys), so the journal, keyed by it, answers a resumed
run; it is stored structured in the journal, beside its text form (`0:instructions`,
`3:classification:1`, `3:instances:1:retry2`), which is also what rejects and logs show.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True, slots=True)
class RequestKey:
    prompt: int  # the instruction prompt the request belongs to
    stage: str
    index: int | None = None  # the candidate of that prompt (None: the prompt itself)
    retry: int = 0  # asked again after an invalid structured reply

    @property
    def text(self) -> str:
        parts = [str(self.prompt), self.stage]
        if self.index is not None:
            parts.append(str(self.index))
        if self.retry:
            parts.append(f"retry{self.retry}")
        return ":".join(parts)

    def __str__(self) -> str:
        return self.text

    def retried(self) -> RequestKey:
        return replace(self, retry=self.retry + 1)

    @classmethod
    def parse(cls, text: str) -> RequestKey:
        """The key a text form names (journals written before keys were stored structured)."""
        parts = text.split(":")
        retry = 0
        if parts[-1].startswith("retry") and parts[-1][5:].isdigit():
            retry = int(parts.pop()[5:])
        if len(parts) not in (2, 3) or not parts[0].isdigit():
            raise ValueError(f"not a request key: {text!r}")
        index = int(parts[2]) if len(parts) == 3 else None
        return cls(int(parts[0]), parts[1], index, retry)
