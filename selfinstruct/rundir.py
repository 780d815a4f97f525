"""Where everything a command writes lives: every file name of a run directory, a job directory
and a filter's output folder, written here and nowhere else."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from selfinstruct.errors import SelfInstructError


@dataclass(frozen=True)
class RunDir:
    """Every file of a generate run directory, named here and nowhere else."""

    path: Path

    @property
    def tasks(self) -> Path:
        return self.path / "tasks.jsonl"

    @property
    def rejected(self) -> Path:
        return self.path / "rejected.jsonl"

    @property
    def requests(self) -> Path:
        """The request journal: every model response, as it arrived."""
        return self.path / "requests.jsonl"

    @property
    def asked(self) -> Path:
        """The id of every request handed to a backend, written as it goes out: one asked but
        not in the journal was in flight when the run stopped, and is asked again on resume."""
        return self.path / "asked.jsonl"

    @property
    def commits(self) -> Path:
        return self.path / "commits.jsonl"

    @property
    def manifest(self) -> Path:
        return self.path / "manifest.json"

    @property
    def usage(self) -> Path:
        return self.path / "usage.json"

    @property
    def plan(self) -> Path:
        """What `selfinstruct plan` projected for this run (the summary sets it beside the
        actual figures)."""
        return self.path / "plan.json"

    @property
    def lock(self) -> Path:
        return self.path / "lock"

    @property
    def batches(self) -> Path:
        """The Batch API's registry of batches created (openai-batch)."""
        return self.path / "batches.jsonl"

    @property
    def review(self) -> Path:
        return self.path / "review.jsonl"

    @property
    def review_lock(self) -> Path:
        return self.path / "review.lock"

    @property
    def audit(self) -> Path:
        """The judge's verdicts, as they arrived."""
        return self.path / "audit.jsonl"

    @property
    def audit_summary(self) -> Path:
        return self.path / "audit_summary.json"

    @property
    def audit_lock(self) -> Path:
        return self.path / "audit.lock"

    @property
    def audited_tasks(self) -> Path:
        """`audit --drop-invalid`'s tasks: those the judge found valid in every field."""
        return self.path / "tasks.audited.jsonl"

    @property
    def audit_rejected(self) -> Path:
        return self.path / "audit_rejected.jsonl"

    @property
    def evals(self) -> Path:
        """One line per `eval` of an adapter tuned on this run: where its summary is."""
        return self.path / "evals.jsonl"

    @property
    def report(self) -> Path:
        return self.path / "report"

    @classmethod
    def find(cls, run: Path) -> RunDir:
        """The run holding tasks: `run` itself, or a job's generate/ stage."""
        for candidate in (cls(run), JobDir(run).generate):
            if candidate.tasks.exists():
                return candidate
        raise SelfInstructError(f"{run}: no tasks.jsonl here or in generate/; give a run directory")


@dataclass(frozen=True)
class JobDir:
    """The files of a `run JOB` directory: one folder per stage, and the job's own state."""

    path: Path

    def stage(self, name: str) -> Path:
        return self.path / name

    @property
    def generate(self) -> RunDir:
        return RunDir(self.stage("generate"))

    @property
    def state(self) -> Path:
        """The job file as written and the stages finished."""
        return self.path / "job.json"

    @property
    def status(self) -> Path:
        return self.path / "status.json"

    @property
    def lock(self) -> Path:
        return self.path / "job.lock"


@dataclass(frozen=True)
class FilterDir:
    """What `selfinstruct filter` writes."""

    path: Path

    @property
    def kept(self) -> Path:
        return self.path / "kept.jsonl"

    @property
    def rejected(self) -> Path:
        return self.path / "rejected.jsonl"

    @property
    def summary(self) -> Path:
        return self.path / "summary.json"


__all__ = ["FilterDir", "JobDir", "RunDir"]
