"""A backend that answers nothing: a run made with it is answered from its journal alone.

Rebuilding a dataset from its card (`selfinstruct run --from-card`) copies the original run's
journal into a new run directory and runs the same loop with this backend: every request is
answered from the journal, so the files come out as the original's, without the model. A request
the journal does not hold stops the run, naming it: the journal does not cover this run.
"""

from __future__ import annotations

from concurrent.futures import Future
from pathlib import Path
from typing import Any

from selfinstruct.backends.base import BackendError, BackendStats, Completion, Prompt
from selfinstruct.config import Options, SamplingParams


class JournalBackend:
    name = "journal"

    def __init__(self, model: str | None, chat: bool) -> None:
        self.model = model or "unknown"
        self.chat = chat

    def submit(
        self, request_id: str, prompt: Prompt, params: SamplingParams, priority: Any = ()
    ) -> Future[Completion]:
        future: Future[Completion] = Future()
        future.set_exception(
            BackendError(
                f"request {request_id} is not in the journal, so this run cannot be made again "
                "without the model: the journal is from another run, or was cut short"
            )
        )
        return future

    def stats(self) -> BackendStats:
        return BackendStats()

    def close(self) -> None:
        pass


def open_journal(
    model: str | None, options: Options, chat: bool | None, run_dir: Path | None
) -> JournalBackend:
    return JournalBackend(model, bool(chat))
