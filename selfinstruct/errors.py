"""User-facing errors. Each message says what went wrong and what to do about it.

Anything that is not a SelfInstructError is a bug or an environment failure and keeps its
traceback; the CLI prints a SelfInstructError as one line and exits with `exit_code`.
"""

from __future__ import annotations


class SelfInstructError(Exception):
    """An error the user can fix; the message says how."""

    exit_code: int = 2


class InputError(SelfInstructError):
    """An input file is missing, unreadable or has a bad row."""

    def __init__(self, path: object, message: str, line: int | None = None) -> None:
        where = f"{path}:{line}" if line is not None else f"{path}"
        super().__init__(f"{where}: {message}")
        self.path = str(path)
        self.line = line


class ConfigError(SelfInstructError):
    """A config file or option has a bad value."""
