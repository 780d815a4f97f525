"""How the novelty filter's rejects grow with the pool: the measure behind `plan`'s prior.

    python bench/novelty_growth.py --alpaca PATH/alpaca_data.json [--run DIR ...]

Two kinds of evidence:

- a run's own record (`--run`, any run directory): novelty rejects per candidate, binned by the
  pool size when its prompt committed, and the logistic slope in log(seeds + pool) fitted to it
  with no prior (plan.fit_novelty with a flat prior);
- a public strong-teacher run, Stanford Alpaca's 52K (text-davinci-003, the Self-Instruct loop
  with a ROUGE-L 0.7 filter): only its kept instructions are public, so every one is below 0.7
  against those before it by construction. What can be measured is crowding: the share of the
  next 400 instructions, in the released order, that have a neighbour above 0.5 and above 0.6
  among the first n (plus the 175 seeds), for n from 500 to 40,000. Its slope in log(pool) is how
  fast the neighbourhood of a new instruction fills, the force behind the paper's falling
  novelty.

Writes bench/novelty_growth.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from selfinstruct.plan import fit_novelty, read_pilot  # noqa: E402
from selfinstruct.similarity import RougeLIndex  # noqa: E402
from selfinstruct.tokens import document_frequencies  # noqa: E402

SEEDS = REPO.parent / "shared" / "data" / "self_instruct_seed_tasks.jsonl"
POOLS = (500, 1000, 2000, 5000, 10000, 20000, 40000)
PROBES = 400


def logit_slope(xs: list[float], shares: list[float]) -> float:
    """Least-squares slope of logit(share) on log(pool)."""
    x = np.log(np.array(xs))
    z = np.array([math.log(max(s, 1e-3) / max(1 - s, 1e-3)) for s in shares])
    return float(np.polyfit(x, z, 1)[0])


def alpaca_crowding(path: Path) -> dict:
    rows = json.loads(path.read_text(encoding="utf-8"))
    seeds = [json.loads(line)["instruction"] for line in SEEDS.read_text().splitlines() if line]
    texts = [r["instruction"] for r in rows]
    out: dict = {"rows": len(texts), "probes": PROBES, "by_pool": []}
    df = document_frequencies(seeds + texts[:2000], "rouge")
    for bar in (0.5, 0.6):
        index = RougeLIndex(bar, "rouge", df)
        for t in seeds:
            index.add(t)
        added = 0
        for n in POOLS:
            started = time.perf_counter()
            for t in texts[added:n]:
                index.add(t)
            added = n
            probes = texts[n : n + PROBES]
            hits = sum(index.find_duplicate(t) is not None for t in probes)
            share = hits / len(probes)
            out["by_pool"].append({"bar": bar, "pool": n + len(seeds), "share": share})
            print(
                f"alpaca bar {bar} pool {n + len(seeds):>6}: {share:.3f} "
                f"({time.perf_counter() - started:.0f} s)",
                flush=True,
            )
    for bar in (0.5, 0.6):
        pts = [p for p in out["by_pool"] if p["bar"] == bar]
        out[f"slope_{bar}"] = logit_slope([p["pool"] for p in pts], [p["share"] for p in pts])
    return out


def run_rejects(run_dir: Path) -> dict:
    seeds = 175
    records, pilot = read_pilot(run_dir, seeds)
    fit = fit_novelty(records, seeds, prior_slope=0.0, prior_sd=1e3)
    bins: dict[int, list[int]] = {}
    for r in records:
        b = bins.setdefault(r.pool // 100 * 100, [0, 0])
        b[0] += r.novelty_rejected
        b[1] += r.candidates
    return {
        "run": str(run_dir),
        "prompts": pilot.prompts,
        "accepted": pilot.accepted,
        "slope": fit.slope,
        "by_pool": [
            {"pool": k + seeds, "rejected": v[0], "candidates": v[1]}
            for k, v in sorted(bins.items())
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alpaca", type=Path)
    parser.add_argument("--run", type=Path, action="append", default=[])
    args = parser.parse_args()
    result: dict = {"runs": [run_rejects(r) for r in args.run]}
    for r in result["runs"]:
        print(f"{r['run']}: slope {r['slope']:+.2f} over {r['by_pool']}")
    if args.alpaca:
        result["alpaca"] = alpaca_crowding(args.alpaca)
    (REPO / "bench" / "novelty_growth.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
