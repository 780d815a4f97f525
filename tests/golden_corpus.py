"""The golden corpus: real completions with the parse we expect, written down and reviewed.

Records live in tests/golden/*.jsonl, one completion per line:

- `stage`: instructions, classification or instances; `mode`: completion or chat;
- the completion itself: `text` (completions this project recorded from the bundled model), or
  `source` (a file under ../shared/data, a line, and the JSON paths of the text and the
  instruction in that row) plus the text's `sha256`, for public data that must not be copied
  into the repository;
- what the parser needs: `finish_reason`, and `instruction` / `classification` /
  `first_number` / `max_items` where the stage uses them;
- `expect`: the parse, as a human reviewed it. Strings from public data are written as
  digests (`{"starts", "chars", "sha1"}`) so the corpus pins them exactly without copying them.
- `known_wrong` (optional): the expectation is right and the parser gets it wrong; the reason
  says why, and `parser_gets` pins what the parser does today, so a change either way shows.

`harvest.py` drafts records from a run's journal; every record is checked by eye before it
goes in (`reviewed: true`).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Any

from selfinstruct.stages.classification import parse as parse_is_classification
from selfinstruct.stages.instances import parse as parse_instances
from selfinstruct.stages.instructions import parse as parse_instructions

GOLDEN = Path(__file__).resolve().parent / "golden"
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def digest(text: str) -> dict[str, Any]:
    return {
        "starts": text[:40],
        "chars": len(text),
        "sha1": hashlib.sha1(text.encode("utf-8")).hexdigest()[:16],
    }


def resolve(record: dict[str, Any]) -> dict[str, Any] | None:
    """The record with its completion `text` (and `instruction`) filled in from the public
    source file, or None when that file is not on this machine."""
    if "source" not in record:
        return record
    source = record["source"]
    path = SHARED_DATA / source["file"]
    if not path.exists():
        return None
    row = json.loads(path.read_text(encoding="utf-8").split("\n")[source["line"] - 1])
    full = dict(record)
    for name, keys in source["fields"].items():
        value: Any = row
        for key in keys:
            value = value[key]
        full[name] = value
    if hashlib.sha256(full["text"].encode("utf-8")).hexdigest() != record["sha256"]:
        raise AssertionError(f"{source}: the source text changed; review this record again")
    return full


def parse(record: dict[str, Any]) -> dict[str, Any]:
    """The parser's answer for one resolved record, in the shape of `expect` (digests for
    public data)."""
    text = record["text"]
    truncated = record.get("finish_reason") == "length"
    show = digest if "source" in record else (lambda s: s)
    if record["stage"] == "instructions":
        parsed = parse_instructions(
            text,
            truncated,
            continues_list=record["mode"] == "completion",
            first_number=record.get("first_number"),
            max_items=record.get("max_items"),
        )
        return {
            "instructions": [show(i) for i in parsed.instructions],
            "dropped": [[reason, show(raw)] for reason, raw in parsed.dropped],
        }
    if record["stage"] == "classification":
        return {"answer": parse_is_classification(text)}
    found = parse_instances(
        text, bool(record["classification"]), truncated, record.get("instruction", "")
    )
    return {
        "instances": [[show(i.input), show(i.output)] for i in found.instances],
        "dropped": [[reason, show(raw)] for reason, raw in found.dropped],
    }


def load(name: str) -> list[dict[str, Any]]:
    path = GOLDEN / name
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def counts(records: list[dict[str, Any]]) -> Counter[str]:
    """What a corpus yields: kept items and drops by reason, over the records present here."""
    total: Counter[str] = Counter()
    for record in records:
        full = resolve(record)
        if full is None:
            continue
        got = parse(full)
        if record["stage"] == "classification":
            total[f"answer: {got['answer']}"] += 1
            continue
        kept = "instructions" if record["stage"] == "instructions" else "instances"
        total[f"kept {kept}"] += len(got[kept])
        total.update(f"dropped: {reason}" for reason, _ in got["dropped"])
    return total
