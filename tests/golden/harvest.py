"""Draft golden records from real completions; a human reviews each before it counts.

    python tests/golden/harvest.py shared OUT_PREFIX
        records for the public Self-Instruct run samples in ../shared/data (text by reference)
    python tests/golden/harvest.py run RUN_DIR NAME OUT.jsonl
        records for every response in a run's requests.jsonl (text inline: our own output)

The draft `expect` is what the parser says today, marked `reviewed: false`. Read every record,
correct `expect` where the parser is wrong (then add `known_wrong` with the reason, or fix the
parser), and set `reviewed: true`. The tests refuse unreviewed records.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from golden_corpus import SHARED_DATA, parse, resolve

SAMPLES = "self_instruct_run_samples"
TEXT_PATHS = {
    "instructions": ["metadata", "response", "choices", 0, "text"],
    "instances": ["instance_metadata", "response", "choices", 0, "text"],
}


def _finish(row: dict[str, Any], stage: str) -> str:
    meta = row["metadata" if stage == "instructions" else "instance_metadata"]
    return meta["response"]["choices"][0]["finish_reason"]


def shared(prefix: str) -> None:
    for stage, name in (
        ("instructions", "machine_generated_instructions.jsonl"),
        ("instances", "machine_generated_instances.jsonl"),
    ):
        path = SHARED_DATA / SAMPLES / name
        seen: set[str] = set()
        records = []
        for number, line in enumerate(path.read_text(encoding="utf-8").split("\n"), start=1):
            if not line.strip():
                continue
            row = json.loads(line)
            value: Any = row
            for key in TEXT_PATHS[stage]:
                value = value[key]
            if value in seen:
                continue  # one request gave several instructions: its text counts once
            seen.add(value)
            fields: dict[str, list[Any]] = {"text": TEXT_PATHS[stage]}
            if stage == "instances":
                fields["instruction"] = ["instruction"]
            record: dict[str, Any] = {
                "id": f"paper-run-sample/{stage}/{number}",
                "stage": stage,
                "mode": "completion",
                "model": "davinci (GPT-3), via the paper's scripts",
                "source": {"file": f"{SAMPLES}/{name}", "line": number, "fields": fields},
                "sha256": hashlib.sha256(value.encode("utf-8")).hexdigest(),
                "finish_reason": _finish(row, stage),
            }
            if stage == "instructions":
                record["first_number"] = 9  # the prompt showed 8 tasks and ended "9."
            else:
                record["classification"] = False
            full = resolve(record)
            assert full is not None
            record["expect"] = parse(full)
            record["reviewed"] = False
            records.append(record)
        _write(Path(f"{prefix}_{stage}.jsonl"), records)


def run(run_dir: str, name: str, out: str) -> None:
    manifest = json.loads((Path(run_dir) / "manifest.json").read_text())
    cfg = manifest["config"]
    mode = "chat" if manifest.get("chat", cfg.get("chat")) else "completion"
    shown = cfg["human_examples"] + cfg["machine_examples"]
    records = []
    for line in (Path(run_dir) / "requests.jsonl").read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        record: dict[str, Any] = {
            "id": f"{name}/{entry['id']}",
            "stage": entry["stage"],
            "mode": mode,
            "model": manifest["model"],
            "text": entry["text"],
            "finish_reason": entry["finish_reason"],
        }
        if entry["stage"] == "instructions":
            record["max_items"] = cfg["max_new_per_prompt"]
            if mode == "completion":
                record["first_number"] = shown + 1
        else:
            record["instruction"] = entry.get("instruction")
            if entry["stage"] == "instances":
                record["classification"] = bool(entry.get("classification"))
        record["expect"] = parse(record)
        record["reviewed"] = False
        records.append(record)
    _write(Path(out), records)


def _write(path: Path, records: list[dict[str, Any]]) -> None:
    path.write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8"
    )
    print(f"{len(records)} records -> {path}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["shared"] and len(sys.argv) == 3:
        shared(sys.argv[2])
    elif sys.argv[1:2] == ["run"] and len(sys.argv) == 5:
        run(*sys.argv[2:5])
    else:
        sys.exit(__doc__)
