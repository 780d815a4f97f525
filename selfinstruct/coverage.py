"""How much of each stage's completions the parsers could read: fully, in part, or not at all.

A user who points the loop at a model it has never seen needs to know at once whether that
model's output format is understood. Every completion a stage parses gives one `Reading`: how
many items it yielded and what it could not use (reasons from the stage's parser). A run sums
them per stage in its manifest, summary and report. Filter decisions (rules, novelty, the
instance filters) are not parsing and are counted elsewhere; a failed request has no text.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from pydantic import BaseModel, Field

# Parser outcomes that are decisions about well-read text, not text it failed to read: items
# past the number the prompt asked for.
_NOT_A_MISREAD = frozenset({"past_stop"})


@dataclass(frozen=True)
class Reading:
    """One completion as a stage's parser read it."""

    stage: str
    used: int  # items read from it: instructions, a yes/no answer, instances
    unread: tuple[str, ...] = field(default=())  # a reason for each piece it could not use

    @property
    def misread(self) -> list[str]:
        """The reasons that count against the reading (see `_NOT_A_MISREAD`)."""
        return [r for r in self.unread if r not in _NOT_A_MISREAD]

    @property
    def outcome(self) -> str:
        if not self.used:
            return "not_read"
        return "partly" if self.misread else "fully"


class StageCoverage(BaseModel):
    fully: int = 0
    partly: int = 0
    not_read: int = 0
    # What could not be read, by reason, over the completions read in part or not at all.
    reasons: dict[str, int] = Field(default_factory=dict)

    @property
    def completions(self) -> int:
        return self.fully + self.partly + self.not_read

    def line(self) -> str:
        """ "52 fully, 6 in part, 2 not read (truncated 5, preamble 3)" """
        if not self.completions:
            return "no completions"
        text = f"{self.fully} fully, {self.partly} in part, {self.not_read} not read"
        return f"{text} ({self.reasons_text()})" if self.reasons else text

    def reasons_text(self) -> str:
        top = sorted(self.reasons.items(), key=lambda kv: (-kv[1], kv[0]))
        return ", ".join(f"{k} {v}" for k, v in top)


class ParseCoverage(BaseModel):
    instructions: StageCoverage = Field(default_factory=StageCoverage)
    classification: StageCoverage = Field(default_factory=StageCoverage)
    instances: StageCoverage = Field(default_factory=StageCoverage)

    def add(self, reading: Reading) -> None:
        stage: StageCoverage = getattr(self, reading.stage)
        outcome = reading.outcome
        setattr(stage, outcome, getattr(stage, outcome) + 1)
        if reading.misread:
            stage.reasons = dict(Counter(stage.reasons) + Counter(reading.misread))

    def stages(self) -> list[tuple[str, StageCoverage]]:
        return [
            (name, getattr(self, name)) for name in ("instructions", "classification", "instances")
        ]
