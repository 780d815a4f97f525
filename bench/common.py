"""What the benchmark scripts share: where the reference data is, and "every rule off"."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
T0 = REPO.parent / "shared" / "data" / "t0_prompts_55k.jsonl.gz"
RULES_OFF = [
    "--no-keywords",
    "--no-banned-prefixes",
    "--min-words",
    "0",
    "--max-words",
    "0",
    "--allow-punctuation-start",
    "--allow-non-ascii-start",
]
