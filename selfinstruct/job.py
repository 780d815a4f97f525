"""`selfinstruct run JOB.yaml`: the whole pipeline from one file, unattended and resumable.

Stages, in order: generate → filter (optional extra pass) → export → finetune (optional) → eval
(optional). Each writes into its own folder of the run directory. `job.json` keeps the job file as
written (with `${VARS}` unexpanded, so secrets are never written back) and which stages finished;
`status.json` is rewritten atomically as stages progress, for monitoring. Running a finished job
again does nothing; a partial one resumes at the first unfinished stage (generate resumes
inside itself); a changed job file for an existing run is refused with a diff.
"""

from __future__ import annotations

import datetime as dt
import difflib
import json
import logging
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from selfinstruct.atomic import write_json_atomic
from selfinstruct.config import JobFile, load_config_file, validation_problems
from selfinstruct.errors import EXIT_CODES, ConfigError, SelfInstructError
from selfinstruct.store import acquire_lock

log = logging.getLogger("selfinstruct")

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def expand_env(value: Any, where: str = "") -> Any:
    """Replace ${NAME} in strings with the environment's value; an unset name is an error."""
    if isinstance(value, str):

        def sub(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in os.environ:
                raise ConfigError(
                    f"{where or 'job file'}: ${{{name}}} is not set in the environment"
                )
            return os.environ[name]

        return _VAR.sub(sub, value)
    if isinstance(value, dict):
        return {k: expand_env(v, f"{where}.{k}" if where else k) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, where) for v in value]
    return value


def load_job(path: Path) -> tuple[JobFile, dict[str, Any]]:
    """The validated job (variables expanded) and the file as written (never expanded)."""
    raw = load_config_file(path)
    try:
        return JobFile.model_validate(expand_env(raw)), raw
    except ValidationError as exc:
        problems = [
            f"'{key}': {msg}".replace("Value error, ", "")
            for key, msg in validation_problems(exc, "job")
        ]
        raise ConfigError(f"{path}: bad job file: " + "; ".join(problems)) from None


class JobResult(BaseModel):
    status: str
    exit_code: int
    message: str
    stages: dict[str, str]
    run_dir: str


class JobRunner:
    def __init__(self, path: Path, force_new_run: bool) -> None:
        self.path = path
        self.job, self.raw = load_job(path)
        self.force_new_run = force_new_run
        self.state_path = self.job.files.state
        self.status_path = self.job.files.status
        self.stages: dict[str, str] = {}
        self._lock_fh: Any = None

    def run(self) -> JobResult:
        self._prepare_run_dir()
        self._lock()
        try:
            state = json.loads(self.state_path.read_text()) if self.state_path.exists() else None
            self.stages = (state or {}).get("stages", {})
            if state is None:
                write_json_atomic(self.state_path, {"job_file": self.raw, "stages": {}})
            todo = [s for s in self.job.enabled() if self.stages.get(s) != "done"]
            if not todo:
                message = "the job has already finished; nothing to do"
                log.info(message, extra={"stage": None, "event": "noop"})
                self._status("done", None, message)
                return self._result("done", message)
            for stage in todo:
                self._status("running", stage, f"running {stage}")
                log.info(f"{stage}: started", extra={"stage": stage, "event": "stage_started"})
                outcome, message = self._run_stage(stage)
                if outcome != "done":
                    self._status(outcome, stage, message)
                    log.warning(
                        f"{stage}: {message}", extra={"stage": stage, "event": f"stage_{outcome}"}
                    )
                    return self._result(outcome, message)
                self.stages[stage] = "done"
                write_json_atomic(self.state_path, {"job_file": self.raw, "stages": self.stages})
                log.info(f"{stage}: done", extra={"stage": stage, "event": "stage_done"})
            message = f"all stages finished: {', '.join(self.job.enabled())}"
            self._status("done", None, message)
            return self._result("done", message)
        except SelfInstructError as exc:
            self._status("failed", None, str(exc), exit_code=exc.exit_code)
            log.error(str(exc), extra={"stage": None, "event": "failed"})
            raise
        except KeyboardInterrupt:
            message = "interrupted; run the same command again to resume"
            self._status("interrupted", None, message)
            log.warning(message, extra={"stage": None, "event": "interrupted"})
            return self._result("interrupted", message)
        finally:
            self._unlock()

    def _prepare_run_dir(self) -> None:
        run_dir = self.job.run_dir
        if self.state_path.exists():
            before = json.loads(self.state_path.read_text()).get("job_file", {})
            if before != self.raw:
                if not self.force_new_run:
                    diff = "\n".join(
                        difflib.unified_diff(
                            json.dumps(before, indent=2, sort_keys=True).splitlines(),
                            json.dumps(self.raw, indent=2, sort_keys=True).splitlines(),
                            "previous job file",
                            "this job file",
                            lineterm="",
                        )
                    )
                    raise ConfigError(
                        f"{run_dir} was started with a different job file; "
                        "use --force-new-run to start over (the old run is "
                        f"kept beside it), or restore the file:\n{diff}"
                    )
                stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
                shutil.move(str(run_dir), f"{run_dir}.old-{stamp}")
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SelfInstructError(f"{run_dir}: cannot create the run directory ({exc})") from None

    def _lock(self) -> None:
        self._lock_fh = acquire_lock(
            self.job.files.lock, f"{self.job.run_dir} is being run by {{holder}}"
        )

    def _unlock(self) -> None:
        if self._lock_fh is not None:
            self._lock_fh.close()
            self._lock_fh = None

    def _status(
        self, status: str, stage: str | None, message: str, exit_code: int | None = None
    ) -> None:
        write_json_atomic(
            self.status_path,
            {
                "status": status,
                "stage": stage,
                "message": message,
                "stages": {s: self.stages.get(s, "pending") for s in self.job.enabled()},
                "exit_code": EXIT_CODES.get(status),
                "pid": os.getpid(),
                "updated_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            },
        )

    def _result(self, status: str, message: str) -> JobResult:
        return JobResult(
            status=status,
            exit_code=EXIT_CODES[status],
            message=message,
            stages={s: self.stages.get(s, "pending") for s in self.job.enabled()},
            run_dir=str(self.job.run_dir),
        )

    def _run_stage(self, stage: str) -> tuple[str, str]:
        outcome, message, counts = STAGE_RUNNERS[stage](self.job)
        log.info(f"{stage}: finished", extra={"stage": stage, "event": "counts", "counts": counts})
        return outcome, message


# -- the stages: each runs its command from the job file and says what it counted ---------

StageResult = tuple[str, str, dict[str, Any]]  # outcome, message, counts for the log


def _generate(job: JobFile) -> StageResult:
    from selfinstruct.display import progress_line, throttled
    from selfinstruct.generate import run_generate

    def progress(p: Any) -> None:
        stats = p.backend
        log.info(
            f"generate: {progress_line(p)}",
            extra={
                "stage": "generate",
                "event": "progress",
                "counts": {
                    "accepted": p.accepted,
                    "prompts": p.prompts,
                    "requests": p.requests,
                    "tokens": p.tokens,
                    "in_flight": stats.in_flight,
                    "limit": stats.limit,
                    "retries": stats.retries,
                    "rate_limited": stats.rate_limited,
                    "timeouts": stats.timeouts,
                    **dict(p.rejected),
                },
            },
        )

    summary = run_generate(job.generate_config(), on_progress=throttled(progress))
    counts = {"accepted": summary.accepted, "requests": summary.requests, **summary.rejected}
    return summary.status, summary.message, counts


def _filter(job: JobFile) -> StageResult:
    from selfinstruct.filtering import run_filter

    result = run_filter(job.filter_config())
    return "done", f"kept {result.kept}", {"kept": result.kept, **result.dropped}


def _export(job: JobFile) -> StageResult:
    from selfinstruct.export import export

    summary = export(job.export_config())
    counts = {"examples": summary.examples, **summary.dropped}
    return "done", f"{summary.examples} examples", counts


def _finetune(job: JobFile) -> StageResult:
    from selfinstruct.finetune import run_finetune

    summary = run_finetune(job.finetune_config())
    return "done", f"{summary.steps} steps", {"steps": summary.steps}


def _eval(job: JobFile) -> StageResult:
    from selfinstruct.evaluation import run_eval

    result = run_eval(job.eval_config())
    return "done", "evaluated", {v.name: round(v.rouge_l, 4) for v in result.variants}


STAGE_RUNNERS: dict[str, Callable[[JobFile], StageResult]] = {
    "generate": _generate,
    "filter": _filter,
    "export": _export,
    "finetune": _finetune,
    "eval": _eval,
}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, stage, event, message, counts."""

    def format(self, record: logging.LogRecord) -> str:
        data = {
            "time": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "stage": getattr(record, "stage", None),
            "event": getattr(record, "event", "log"),
            "message": record.getMessage(),
        }
        counts = getattr(record, "counts", None)
        if counts:
            data["counts"] = counts
        return json.dumps(data, ensure_ascii=False)
