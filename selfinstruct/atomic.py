"""Write a file so that readers see the old version or the new one, never half of it."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, TextIO


@contextmanager
def atomic_write(path: Path) -> Iterator[TextIO]:
    """A text handle on a temporary file beside `path`, renamed over it when the block ends.

    If the block raises, the temporary file is removed and `path` is untouched.
    """
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_writes(*paths: Path) -> Iterator[list[TextIO]]:
    """Several files written together: each to a temporary file, and only when every one is
    flushed and synced (where a full disk shows) are they all renamed into place. If anything
    raises before that, no file appears and no temporary file is left."""
    tmps = [path.with_name(f".{path.name}.tmp") for path in paths]
    handles: list[TextIO] = []
    try:
        for tmp in tmps:
            handles.append(tmp.open("w", encoding="utf-8"))
        yield handles
        for fh in handles:
            fh.flush()
            os.fsync(fh.fileno())
        for fh in handles:
            fh.close()
        for tmp, path in zip(tmps, paths, strict=True):
            tmp.replace(path)
    finally:
        for fh in handles:
            # A full disk fails the close's own flush too; the temporary file goes anyway.
            with suppress(OSError):
                fh.close()
        for tmp in tmps:
            tmp.unlink(missing_ok=True)


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_write(path) as fh:
        fh.write(text)


def write_json_atomic(path: Path, data: Any) -> None:
    with atomic_write(path) as fh:
        json.dump(data, fh, indent=2, ensure_ascii=False)
        fh.write("\n")
