"""User-facing errors and the one table of exit codes.

Each message says what went wrong and what to do about it. Anything that is not a
SelfInstructError is a bug or an environment failure and keeps its traceback; the CLI prints a
SelfInstructError as one line and exits with its `exit_code`.
"""

from __future__ import annotations

# Every command, `run JOB` included, ends with one of these (docs/jobs.md, "Exit codes").
EXIT_CODES: dict[str, int] = {
    "done": 0,
    "config": 2,
    "backend": 3,
    "locked": 4,
    "budget": 5,
    "stalled": 6,
    "interrupted": 130,
}
# What each means, as docs/jobs.md's table says it (a test holds the two together).
EXIT_MEANINGS: dict[str, str] = {
    "done": "success (or nothing to do)",
    "config": "user or configuration error; the message says what to fix",
    "backend": "the backend cannot work: unreachable, key refused, unknown model, missing package",
    "locked": "another process is writing this run directory",
    "budget": "a budget was reached, or the plan says it would be (refused before spending); "
    "the partial output is kept (raise it and rerun to continue)",
    "stalled": "generation stopped because instruction prompts stopped giving tasks",
    "interrupted": "interrupted (SIGINT or SIGTERM); rerun the same command to resume",
}


class SelfInstructError(Exception):
    """An error the user can fix; the message says how."""

    exit_code: int = EXIT_CODES["config"]


class InputError(SelfInstructError):
    """An input file is missing, unreadable or has a bad row."""

    def __init__(self, path: object, message: str, line: int | None = None) -> None:
        where = f"{path}:{line}" if line is not None else f"{path}"
        super().__init__(f"{where}: {message}")
        self.path = str(path)
        self.line = line


class ConfigError(SelfInstructError):
    """A config file or option has a bad value."""


class BackendError(SelfInstructError):
    """The backend cannot serve requests at all (bad key, unknown model, missing package)."""

    exit_code = EXIT_CODES["backend"]


class RunLockedError(SelfInstructError):
    """Another process is writing this run."""

    exit_code = EXIT_CODES["locked"]


class OverBudgetError(SelfInstructError):
    """The plan says the run would exceed --max-cost or --max-hours: refused before spending."""

    exit_code = EXIT_CODES["budget"]
