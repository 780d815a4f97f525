from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
SEED_FILE = REPO / "seed_tasks" / "seed_tasks.jsonl"


def shared_file(name: str) -> Path:
    """A reference data file from ../shared/data, or skip when this checkout has none."""
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"reference data {path} is not present")
    return path


def t0_instructions(limit: int | None = None) -> list[str]:
    with gzip.open(shared_file("t0_prompts_55k.jsonl.gz"), "rb") as fh:
        data = fh.read()
    rows = [json.loads(line)["instruction"] for line in data.split(b"\n") if line.strip()]
    return rows[:limit] if limit is not None else rows


def jsonl_instructions(name: str) -> list[str]:
    path = shared_file(name)
    return [json.loads(line)["instruction"] for line in path.read_text().splitlines() if line]
