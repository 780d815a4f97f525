"""Filter benchmark: `selfinstruct filter` on the T0 prompts, and the speed-up over rouge_score.

Usage: .venv/bin/python bench/filter_bench.py [--sample 250] [--runs 3]

1. Runs the real CLI (a fresh interpreter, so start-up counts) on the full 55,185-row file:
   once with the paper's rule filters, once with every rule off so that all rows go through the
   ROUGE-L stage. Reports wall time (median of --runs) and the peak memory of the processes.
2. On a sample of rows spread over the file, runs the paper's way (each row scored with
   rouge_score against every row kept before it) and our index on the same rows, checks that
   the decisions are identical, and reports the speed-up. The reference cost of the full file is
   projected from the number of pairs the paper's way would score there.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import RULES_OFF, T0  # bench/common.py


def run_cli(args: list[str], runs: int) -> tuple[float, float, dict]:
    """Median wall seconds, peak RSS (MiB) of the CLI and its worker, and its summary.

    The summary gains `paper_pairs`: how many pairs the paper's loop would score on the same
    input (each row against every row kept before it).
    """
    exe = Path(sys.executable).with_name("selfinstruct")
    walls, peak = [], 0.0
    summary: dict = {}
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as out:
            before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            start = time.perf_counter()
            subprocess.run([str(exe), "filter", str(T0), "-o", out, "-q", *args], check=True)
            walls.append(time.perf_counter() - start)
            # ru_maxrss of children is the largest descendant seen so far (KiB on Linux).
            peak = max(peak, max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
            summary = json.loads((Path(out) / "summary.json").read_text())
            summary["paper_pairs"] = _count(Path(out) / "kept.jsonl", Path(out) / "rejected.jsonl")
    return statistics.median(walls), peak / 1024, summary


def reference_side_by_side(sample_size: int) -> dict:
    from rouge_score import rouge_scorer

    from selfinstruct.similarity import RougeLIndex

    with gzip.open(T0, "rb") as fh:
        rows = [json.loads(line)["instruction"] for line in fh.read().split(b"\n") if line.strip()]
    step = len(rows) // sample_size
    sample = rows[::step][:sample_size]
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)

    start = time.perf_counter()
    kept: list[str] = []
    expected, pairs = [], 0
    for text in sample:
        scores = [scorer.score(k, text)["rougeL"].fmeasure for k in kept]
        pairs += len(scores)
        dropped = max(scores, default=0.0) > 0.7
        expected.append(dropped)
        if not dropped:
            kept.append(text)
    reference_s = time.perf_counter() - start

    start = time.perf_counter()
    index = RougeLIndex(0.7, "rouge")
    ours = [m is not None for m in index.add_if_novel_many(sample)]
    ours_s = time.perf_counter() - start
    return {
        "sample_rows": len(sample),
        "pairs": pairs,
        "reference_s": reference_s,
        "ours_s": ours_s,
        "identical": ours == expected,
        "reference_us_per_pair": reference_s / max(pairs, 1) * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sample", type=int, default=250, help="rows for the rouge_score side by side; 0 skips it"
    )
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if not T0.exists():
        sys.exit(f"{T0} not found: this benchmark reads ../shared/data")
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}"
    )
    for label, extra in (("paper rules + ROUGE-L", []), ("ROUGE-L on every row", RULES_OFF)):
        wall, peak, summary = run_cli(extra, args.runs)
        everything = summary
        print(
            f"{label}: {wall:.2f} s wall (median of {args.runs}), peak {peak:.0f} MiB, "
            f"rows {summary['rows_in']}, kept {summary['kept']}, dropped {summary['dropped']}, "
            f"LCS computed {summary['comparisons']:,} of the paper's "
            f"{summary['paper_pairs']:,} pairs"
        )
    if args.sample <= 0:
        return
    side = reference_side_by_side(args.sample)
    print(
        f"side by side on {side['sample_rows']} sampled rows: rouge_score "
        f"{side['reference_s']:.1f} s ({side['pairs']:,} pairs, "
        f"{side['reference_us_per_pair']:.0f} us/pair), ours {side['ours_s'] * 1000:.1f} ms, "
        f"speed-up {side['reference_s'] / side['ours_s']:.0f}x, identical decisions: "
        f"{side['identical']}"
    )
    hours = everything["paper_pairs"] * side["reference_us_per_pair"] / 1e6 / 3600
    print(
        f"projected rouge_score time for the full file, every row through ROUGE-L: "
        f"{everything['paper_pairs']:,} pairs x {side['reference_us_per_pair']:.0f} us = "
        f"{hours:.1f} CPU-hours"
    )


def _count(kept_path: Path, rejected_path: Path) -> int:
    """Pairs the paper's loop scores: each row that reaches ROUGE-L, against the kept before it."""
    # Row numbers come from ids ("t0_prompts_55k-N") and origins ("path:N").
    rows = [(int(json.loads(x)["id"].rsplit("-", 1)[1]), True) for x in kept_path.open()]
    for line in rejected_path.open():
        record = json.loads(line)
        if record["stage"] == "novelty":
            rows.append((int(record["origin"].rsplit(":", 1)[1]), False))
    total, kept = 0, 0
    for _, is_kept in sorted(rows):
        total += kept
        kept += is_kept
    return total


if __name__ == "__main__":
    main()
