"""The run directory: append-only JSONL, a request journal, round markers, manifest and lock.

Layout of `outputs/<run>/`:

- `tasks.jsonl`, `rejected.jsonl`: accepted tasks and every dropped item, one JSON per line.
- `requests.jsonl`: every model response, written (and flushed) the moment it arrives, keyed by
  a deterministic request id, with a hash of the prompt. On resume the loop runs again from the
  start, answering from the journal what it can: nothing paid for is lost, nothing is asked
  twice, and every decision comes out as it did.
- `commits.jsonl`: one marker per instruction prompt whose results are written (its tasks and
  rejects go out together, in prompt order), with the byte size of both files at that point. On
  resume both files are cut back to the last marker, which removes a partly written prompt (and
  any torn last line); the replay then skips writing what the markers already cover.
- `manifest.json` (config snapshot, never secrets; status; counts) and `usage.json`, written
  atomically (temp file + rename).
- `lock`: held with flock while a process writes the run; the kernel releases it if the
  process dies, so a crash never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError, model_validator

from selfinstruct.atomic import write_json_atomic
from selfinstruct.errors import RunLockedError, SelfInstructError
from selfinstruct.keys import RequestKey
from selfinstruct.manifest import RunManifest
from selfinstruct.records import Rejected, Task, dump_line
from selfinstruct.rundir import RunDir

T = TypeVar("T")

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


class CommitMarker(BaseModel):
    prompt: int  # the instruction prompt whose results were written
    tasks_bytes: int
    rejected_bytes: int
    accepted: int  # tasks accepted from this prompt
    rejected: int  # records written to rejected.jsonl for this prompt


class JournalEntry(BaseModel):
    id: str  # the key's text form, for people and for journals older than `key`
    key: RequestKey | None = None  # structured; filled from `id` in older journals
    stage: str
    text: str
    finish_reason: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None  # a request that failed for good (finish_reason "error")
    prompt_sha: str | None = None  # the prompt's hash: a resumed run must send the same prompt
    # What the request was about, so a journal can be parsed again on its own (golden corpus,
    # a parser fix): the instruction, and for instance requests whether it was classification.
    instruction: str | None = None
    classification: bool | None = None

    @model_validator(mode="after")
    def _keyed(self) -> JournalEntry:
        if self.key is None:
            self.key = RequestKey.parse(self.id)
        return self


# File descriptors of the locks this process holds. A forked child shares each flock with its
# parent (same open file), so a worker that outlived a killed parent would keep the run locked;
# the child drops its copies at once (closing a copy leaves the parent's lock in place).
_held_lock_fds: set[int] = set()


def _drop_inherited_locks() -> None:
    for fd in list(_held_lock_fds):
        with contextlib.suppress(OSError):
            os.close(fd)
    _held_lock_fds.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_drop_inherited_locks)


class _LockFile:
    """The open lock file; closing it releases the lock."""

    def __init__(self, fh: Any) -> None:
        self._fh = fh
        _held_lock_fds.add(fh.fileno())

    def close(self) -> None:
        if not self._fh.closed:
            _held_lock_fds.discard(self._fh.fileno())
            self._fh.close()


def acquire_lock(path: Path, busy_message: str) -> _LockFile:
    """Hold an exclusive flock on `path` (kept open); raise RunLockedError if another has it.

    The kernel releases a flock when its holder dies, so a crash never leaves a stale lock.
    `busy_message` may contain {holder}, replaced by what the holder wrote into the file.
    """
    fh = path.open("a+", encoding="utf-8")
    if fcntl is not None:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise RunLockedError(busy_message.format(holder=holder)) from None
    fh.seek(0)
    fh.truncate()
    fh.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
    fh.flush()
    return _LockFile(fh)


def _read_jsonl_prefix(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The records of a JSONL file up to its first unreadable line, and their byte size."""
    if not path.exists():
        return [], 0
    records, good = [], 0
    with path.open("rb") as fh:
        for line in fh:
            if not line.endswith(b"\n"):
                break  # torn last line: the process died while writing it
            try:
                records.append(json.loads(line))
            except ValueError:
                break
            good += len(line)
    return records, good


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _prefix_size(path: Path, lines: int) -> int:
    """Bytes taken by the first `lines` lines of `path`."""
    with path.open("rb") as fh:
        return sum(len(fh.readline()) for _ in range(lines))


class EventLog:
    """An append-only JSONL file (review answers, audit verdicts): each record is on disk
    before `append` returns, and a line torn by a crash at the end is cut off on open."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        _, good = _read_jsonl_prefix(path)
        if _size(path) > good:
            self._truncate_tail(path, good)
        self._fh = path.open("ab")

    @staticmethod
    def _truncate_tail(path: Path, good: int) -> None:
        data = path.read_bytes()
        if b"\n" in data[good:].rstrip(b"\n"):
            # An unreadable line with whole lines after it is not a torn write: keep it all,
            # and let the reader name the line.
            return
        with path.open("r+b") as fh:
            fh.truncate(good)

    def append(self, record: BaseModel) -> None:
        self._fh.write(record.model_dump_json().encode("utf-8") + b"\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> EventLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def read(path: Path, parse: Callable[[Any], T], what: str) -> list[T]:
        """Every record; a torn last line is skipped, any other bad line is an error."""
        if not path.exists():
            return []
        lines = path.read_bytes().split(b"\n")
        out: list[T] = []
        for number, raw in enumerate(lines, 1):
            if not raw.strip():
                continue
            try:
                out.append(parse(json.loads(raw)))
            except (ValueError, ValidationError) as exc:
                if number == len(lines):  # no newline after it: torn by a crash mid-write
                    break
                first = str(exc).splitlines()[0]
                raise SelfInstructError(
                    f"{path}:{number}: not {what} ({first}); fix or remove that line"
                ) from None
        return out


def generate_dir(run: Path) -> Path:
    """The folder holding a run's tasks.jsonl: the run itself, or a job's generate/ stage."""
    return RunDir.find(run).path


class RunStore:
    """One run directory, opened for writing by at most one process at a time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.files = files = RunDir(path)
        self.tasks_path = files.tasks
        self.rejected_path = files.rejected
        self.journal_path = files.requests
        self.commits_path = files.commits
        self.manifest_path = files.manifest
        self.usage_path = files.usage
        self._lock_fh: Any = None
        self._files: dict[str, Any] = {}
        self.journal: dict[RequestKey, JournalEntry] = {}
        # Running totals of the journal's usage: budgets are checked before every batch.
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.commits: list[CommitMarker] = []
        # Asked by an earlier process and never answered into the journal: in flight when it
        # stopped, so asked (and paid) again now.
        self.unanswered: set[RequestKey] = set()

    # -- opening ------------------------------------------------------------------------

    def open(self) -> None:
        """Lock the run, repair what a crash may have left, and load the journal and commits."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SelfInstructError(
                f"{self.path}: cannot create the run directory ({exc})"
            ) from None
        self._lock()
        markers, size = _read_jsonl_prefix(self.commits_path)
        self.commits = [CommitMarker.model_validate(m) for m in markers]
        # A marker is trusted only if the data it points at is there (a power cut can lose
        # what the kernel had not written yet).
        while self.commits and (
            self.commits[-1].tasks_bytes > _size(self.tasks_path)
            or self.commits[-1].rejected_bytes > _size(self.rejected_path)
        ):
            self.commits.pop()
        self._truncate(
            self.commits_path,
            size if not markers else _prefix_size(self.commits_path, len(self.commits)),
        )
        last = self.commits[-1] if self.commits else None
        self._truncate(self.tasks_path, last.tasks_bytes if last else 0)
        self._truncate(self.rejected_path, last.rejected_bytes if last else 0)
        entries, size = _read_jsonl_prefix(self.journal_path)
        self._truncate(self.journal_path, size)
        loaded = (JournalEntry.model_validate(e) for e in entries)
        self.journal = {e.key: e for e in loaded if e.key is not None}
        self.prompt_tokens = sum(e.prompt_tokens for e in self.journal.values())
        self.completion_tokens = sum(e.completion_tokens for e in self.journal.values())
        asked, size = _read_jsonl_prefix(self.files.asked)
        self._truncate(self.files.asked, size)
        self.unanswered = {RequestKey.parse(a["id"]) for a in asked} - set(self.journal)
        for name, path in (
            ("tasks", self.tasks_path),
            ("rejected", self.rejected_path),
            ("journal", self.journal_path),
            ("commits", self.commits_path),
            ("asked", self.files.asked),
        ):
            self._files[name] = path.open("a", encoding="utf-8")

    def _lock(self) -> None:
        self._lock_fh = acquire_lock(
            self.files.lock,
            f"{self.path} is being written by {{holder}}; wait for it to "
            "finish or use another --run-dir",
        )

    @staticmethod
    def _truncate(path: Path, size: int) -> None:
        if path.exists() and path.stat().st_size != size:
            with path.open("r+b") as fh:
                fh.truncate(size)

    def close(self) -> None:
        for fh in self._files.values():
            fh.close()
        self._files.clear()
        if self._lock_fh is not None:
            self._lock_fh.close()
            self._lock_fh = None

    def __enter__(self) -> RunStore:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading back -------------------------------------------------------------------

    def tasks(self) -> list[Task]:
        records, _ = _read_jsonl_prefix(self.tasks_path)
        return [Task.model_validate(r) for r in records]

    def rejected(self) -> list[Rejected]:
        records, _ = _read_jsonl_prefix(self.rejected_path)
        return [Rejected.model_validate(r) for r in records]

    def manifest(self) -> RunManifest | None:
        return RunManifest.read(self.manifest_path)

    # -- writing ------------------------------------------------------------------------

    def record_response(self, entry: JournalEntry) -> None:
        """Journal a model response at once: it is the expensive thing to lose."""
        fh = self._files["journal"]
        fh.write(entry.model_dump_json(exclude_none=True) + "\n")
        fh.flush()
        self.journal[entry.key or RequestKey.parse(entry.id)] = entry
        self.prompt_tokens += entry.prompt_tokens
        self.completion_tokens += entry.completion_tokens

    def record_asked(self, keys: list[RequestKey]) -> None:
        """Note requests as they go to the backend (flushed, not synced: a count, not data)."""
        if keys:
            fh = self._files["asked"]
            fh.write("".join(f'{{"id": "{k.text}"}}\n' for k in keys))
            fh.flush()

    def commit(self, results: list[tuple[int, list[Task], list[Rejected]]]) -> None:
        """Append the results of consecutive prompts, make them durable, then mark them written.

        One fsync per file per call: the loop hands over every prompt that became complete at
        once, so a fast run does not pay a disk flush per prompt.
        """
        markers = []
        for prompt, tasks, rejected in results:
            for name, records in (("tasks", tasks), ("rejected", rejected)):
                self._files[name].writelines(dump_line(r) for r in records)
                self._files[name].flush()
            markers.append(
                CommitMarker(
                    prompt=prompt,
                    tasks_bytes=_size(self.tasks_path),
                    rejected_bytes=_size(self.rejected_path),
                    accepted=len(tasks),
                    rejected=len(rejected),
                )
            )
        for name in ("tasks", "rejected"):
            os.fsync(self._files[name].fileno())
        fh = self._files["commits"]
        fh.writelines(m.model_dump_json() + "\n" for m in markers)
        fh.flush()
        os.fsync(fh.fileno())
        self.commits.extend(markers)

    def write_manifest(self, manifest: RunManifest) -> None:
        write_json_atomic(self.manifest_path, manifest.dump())

    def write_usage(self, data: dict[str, Any]) -> None:
        write_json_atomic(self.usage_path, data)
