"""User-facing errors and the one table of exit codes.

Each message says what went wrong and what to do about it. Anything that is not a
SelfInstructError is a bug or an environment failure and keeps its traceback; the CLI prints a
SelfInstructError as one line and exits with its `exit_code`.
"""

from __future__ import annotations

# Every command, `run JOB` included, ends with one of these (README: "Exit codes").
EXIT_CODES: dict[str, int] = {
    "done": 0,  # finished, or nothing left to do
    "config": 2,  # bad input file, option or config
    "backend": 3,  # the model backend cannot serve (bad key, unknown model, server unreachable)
    "locked": 4,  # another process holds the run
    "budget": 5,  # stopped at a request, token or cost budget; raise it to continue
    "stalled": 6,  # rounds in a row accepted nothing
    "interrupted": 130,  # Ctrl-C or SIGTERM; the same command resumes
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
