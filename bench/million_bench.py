"""Stretch benchmark: filter a 1,000,000-row corpus full of near-duplicates, then audit it.

Usage: .venv/bin/python bench/million_bench.py [--rows 1000000] [--audit 300]
       [--keep-corpus FILE.jsonl.gz] [--corpus FILE.jsonl.gz]

The corpus is built here, deterministically: words are drawn with the frequencies they have in
the T0 prompts; a third of the rows are fresh sentences of 6-30 words, the rest are copies of an
earlier row with 1-4 word edits (insert, delete, replace), so many score above 0.7 and many just
below. `selfinstruct filter` runs on it with every rule off (all rows reach ROUGE-L); wall time
and peak memory are reported. Then, for a random sample of rows, the decision is recomputed by
exhaustive comparison (every kept row before it, no pruning) and must match, score included.
"""

from __future__ import annotations

import argparse
import gzip
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
from common import RULES_OFF, T0  # bench/common.py


def build_corpus(path: Path, rows: int, seed: int = 0) -> None:
    from selfinstruct.tokens import rouge_tokenize

    with gzip.open(T0, "rb") as fh:
        lines = fh.read().split(b"\n")
    counts: Counter[str] = Counter()
    for line in lines[::5]:
        if line.strip():
            counts.update(rouge_tokenize(json.loads(line)["instruction"]))
    words = np.array([w for w, _ in counts.most_common(20000)])
    weights = np.array([c for _, c in counts.most_common(20000)], dtype=float)
    weights /= weights.sum()
    rng = np.random.default_rng(seed)
    corpus: list[list[str]] = []
    with gzip.open(path, "wt", encoding="utf-8", compresslevel=1) as out:
        for i in range(rows):
            if i == 0 or rng.random() < 1 / 3:
                sentence = list(rng.choice(words, size=int(rng.integers(6, 31)), p=weights))
            else:
                sentence = list(corpus[int(rng.integers(0, len(corpus)))])
                for _ in range(int(rng.integers(1, 5))):
                    op, at = rng.integers(0, 3), int(rng.integers(0, len(sentence)))
                    word = str(words[int(rng.integers(0, 2000))])
                    if op == 0:
                        sentence.insert(at, word)
                    elif op == 1 and len(sentence) > 3:
                        del sentence[at]
                    else:
                        sentence[at] = word
            corpus.append(sentence)
            text = " ".join(sentence).capitalize() + "."
            out.write(json.dumps({"instruction": text, "input": "", "output": ""}) + "\n")


def audit(out_dir: Path, sample: int, seed: int = 1) -> tuple[int, int]:
    """Recheck `sample` random rows against every kept row before them, without pruning."""
    from selfinstruct.similarity import RougeLIndex

    kept_rows = [
        (int(json.loads(x)["id"].rsplit("-", 1)[1]), json.loads(x)["instruction"])
        for x in (out_dir / "kept.jsonl").open()
    ]
    rejected = {}
    for x in (out_dir / "rejected.jsonl").open():
        record = json.loads(x)
        rejected[int(record["origin"].rsplit(":", 1)[1])] = record
    exhaustive = RougeLIndex(0.7, "rouge", prune=False)
    for _, text in kept_rows:
        exhaustive.add(text)
    lines = np.array([line for line, _ in kept_rows])
    total = len(kept_rows) + len(rejected)
    rng = np.random.default_rng(seed)
    texts = {line: text for line, text in kept_rows}
    agree = 0
    for line in rng.choice(np.arange(1, total + 1), size=sample, replace=False).tolist():
        text = texts[line] if line in texts else rejected[line]["text"]
        before = int(np.searchsorted(lines, line))  # kept rows earlier in the file
        scores = exhaustive.scores(text, workers=2)[:before]
        best = float(scores.max()) if before else 0.0
        if line in rejected:
            ok = best > 0.7 and best == rejected[line]["detail"]["score"]
        else:
            ok = not best > 0.7
        agree += ok
    return agree, sample


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--audit", type=int, default=300)
    parser.add_argument("--corpus", type=Path, help="reuse this corpus instead of building one")
    parser.add_argument("--keep-corpus", type=Path, help="also write the built corpus here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        corpus = args.corpus or args.keep_corpus or Path(tmp) / "corpus.jsonl.gz"
        if args.corpus is None:
            start = time.perf_counter()
            build_corpus(corpus, args.rows)
            print(
                f"built {args.rows:,} rows in {time.perf_counter() - start:.0f} s "
                f"({corpus.stat().st_size / 2**20:.0f} MiB gzipped)"
            )
        out = Path(tmp) / "out"
        exe = Path(sys.executable).with_name("selfinstruct")
        start = time.perf_counter()
        subprocess.run(
            [str(exe), "filter", str(corpus), "-o", str(out), "-q", *RULES_OFF], check=True
        )
        wall = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
        summary = json.loads((out / "summary.json").read_text())
        print(
            f"filter: {wall:.0f} s wall, peak {peak:.2f} GiB (largest process), kept "
            f"{summary['kept']:,}, dropped {summary['dropped']}, LCS computed "
            f"{summary['comparisons']:,}"
        )
        agree, sample = audit(out, args.audit)
        print(f"audit: {agree}/{sample} sampled decisions equal exhaustive comparison")


if __name__ == "__main__":
    main()
