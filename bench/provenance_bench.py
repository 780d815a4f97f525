"""CPU per task of the paper's provenance fields as the pool grows.

    python bench/provenance_bench.py [--sizes 1000,10000,26000,52000]

Each accepted instruction gets its ten most similar pool instructions and its mean ROUGE-L
against the whole pool (`most_similar`, `avg_similarity_score`): exhaustive, so its cost grows
with the pool. The pool is made of the loop bench's made-up instructions (8-14 words, about the
length of real ones); at each size, the provenance of the last list (7 entries, one background
job as `generate` gives it) is timed 20 times, CPU of every thread counted.
"""

from __future__ import annotations

import argparse
import platform
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loop_bench import _WORDS  # the fake's vocabulary

from selfinstruct.similarity import RougeLIndex


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000,26000,52000")
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    rng = random.Random(0)
    index = RougeLIndex(0.7, "rouge")
    print(f"machine: {platform.machine()}, Python {platform.python_version()}")
    print("pool | CPU per task")
    while len(index) < sizes[-1]:
        words = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(8, 14)))
        index.add_if_novel(words.capitalize() + ".")
        if len(index) in sizes:
            started = time.process_time()
            for _ in range(20):
                index.provenance(len(index) - 7, 7).result()
            per_task = (time.process_time() - started) / 20 / 7
            print(f"{len(index):,} | {1000 * per_task:.2f} ms", flush=True)


if __name__ == "__main__":
    main()
