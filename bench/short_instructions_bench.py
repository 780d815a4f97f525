"""Short-instruction benchmark: `selfinstruct filter` on 52,000 short, distinct instructions.

Usage: .venv/bin/python bench/short_instructions_bench.py [--rows 52000] [--runs 3]
       [--keep-corpus FILE] [--corpus FILE]

A large generated pool is mostly short instructions that are all novel, and that is the hard
case for the ROUGE-L index: no near-duplicate ends a search early, and common words ("the",
"a", "of") give every probe many candidates whose bound stays above 0.7. The corpus is built
here, deterministically (fixed seed):

- a word-bigram model is counted from human-written instructions (the Self-Instruct seed tasks,
  the user-oriented set, the sample run's instructions) and the sentences of every 10th T0
  prompt; a text starts with the first word of a human instruction and follows the bigrams for
  10-20 words, ending with "?" after a question word, else ".";
- candidates go through the index in order and only the novel ones (ROUGE-L <= 0.7 against
  every earlier one) are kept, up to --rows. The filter run below must then keep every row,
  which the script checks.

Then `selfinstruct filter` runs as a user runs it (fresh interpreter, every rule off so all rows
reach ROUGE-L, default --workers), median of --runs, and the index alone is timed in-process
(add_if_novel_many over the pre-encoded rows, as the filter's main process does it).
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from itertools import pairwise
from pathlib import Path

import numpy as np
from common import RULES_OFF, T0  # bench/common.py

HUMAN = (
    "self_instruct_seed_tasks.jsonl",
    "user_oriented_instructions.jsonl",
    "self_instruct_run_samples/machine_generated_instructions.jsonl",
)
QUESTION_WORDS = {"what", "how", "why", "who", "which", "when", "where", "is", "are", "can", "do"}
_WORD = re.compile(r"[A-Za-z0-9']+")
_SENTENCE_END = re.compile(r"(?<=[.?!])\s+")


class _Bigrams:
    """Next-word sampling by bigram counts, with cumulative weights for fast draws."""

    def __init__(self, human: list[str], other: list[str]) -> None:
        follow: defaultdict[str, Counter[str]] = defaultdict(Counter)
        for text in human + other:
            for sentence in _SENTENCE_END.split(text):
                words = [w.lower() for w in _WORD.findall(sentence)]
                if len(words) >= 3:
                    for a, b in pairwise(words):
                        follow[a][b] += 1
        starts = Counter(w[0].lower() for w in map(_WORD.findall, human) if w)
        self.starts = (list(starts), np.cumsum(list(starts.values()), dtype=float))
        self.follow = {
            a: (list(c), np.cumsum(list(c.values()), dtype=float)) for a, c in follow.items()
        }

    def sentence(self, rng: np.random.Generator) -> str:
        size = int(rng.integers(10, 21))
        words = [_draw(*self.starts, rng)]
        while len(words) < size:
            words.append(_draw(*self.follow.get(words[-1], self.starts), rng))
        end = "?" if words[0] in QUESTION_WORDS else "."
        return " ".join(words).capitalize() + end


def _draw(words: list[str], cumulative: np.ndarray, rng: np.random.Generator) -> str:
    return words[int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))]


def build_corpus(path: Path, rows: int, seed: int = 0) -> int:
    """Write `rows` novel instructions to `path` (JSONL); returns how many candidates it took."""
    from selfinstruct.similarity import RougeLIndex
    from selfinstruct.tokens import document_frequencies

    data = T0.parent
    human = [
        json.loads(line)["instruction"]
        for name in HUMAN
        for line in (data / name).read_text().splitlines()
        if line.strip()
    ]
    with gzip.open(T0, "rb") as fh:
        t0 = [json.loads(x)["instruction"] for x in fh.read().split(b"\n")[::10] if x.strip()]
    model = _Bigrams(human, t0)
    rng = np.random.default_rng(seed)
    batch = [model.sentence(rng) for _ in range(rows + 64)]
    # Rarest-first order from the candidates themselves: without it the search is far slower.
    frequencies = document_frequencies(batch[::10], "rouge")
    index = RougeLIndex(0.7, "rouge", token_frequencies=frequencies)
    texts: list[str] = []
    tried = 0
    while batch:
        tried += len(batch)
        for text, match in zip(batch, index.add_if_novel_many(batch), strict=True):
            if match is None and len(texts) < rows:
                texts.append(text)
        batch = [model.sentence(rng) for _ in range(rows - len(texts))]
    with path.open("w", encoding="utf-8") as out:
        for text in texts:
            out.write(json.dumps({"instruction": text, "input": "", "output": ""}) + "\n")
    return tried


def run_cli(corpus: Path, runs: int) -> tuple[float, list[float], dict]:
    """Median wall seconds of `selfinstruct filter`, every run's, and the last summary."""
    exe = Path(sys.executable).with_name("selfinstruct")
    walls, summary = [], {}
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            subprocess.run(
                [str(exe), "filter", str(corpus), "-o", out, "-q", *RULES_OFF], check=True
            )
            walls.append(time.perf_counter() - start)
            summary = json.loads((Path(out) / "summary.json").read_text())
    return statistics.median(walls), walls, summary


def index_alone(corpus: Path, runs: int) -> tuple[float, int]:
    """Median seconds of add_if_novel_many over the pre-encoded rows, and its LCS count."""
    from selfinstruct.filtering import FREQUENCY_SAMPLE
    from selfinstruct.records import sample_instructions
    from selfinstruct.similarity import RougeLIndex
    from selfinstruct.tokens import TokenEncoder, document_frequencies, rouge_tokenize

    texts = [json.loads(line)["instruction"] for line in corpus.open()]
    frequencies = document_frequencies(sample_instructions(corpus, FREQUENCY_SAMPLE), "rouge")
    times, comparisons = [], 0
    for _ in range(runs):
        encoder = TokenEncoder(frequencies)  # the filter's second process does this part
        encoded = [encoder.encode(rouge_tokenize(text)) for text in texts]
        index = RougeLIndex(0.7, "rouge", token_frequencies=frequencies)
        index.encoder.extend(encoder.tokens)
        start = time.perf_counter()
        index.add_if_novel_many(texts, encoded=encoded)
        times.append(time.perf_counter() - start)
        comparisons = index.comparisons
    return statistics.median(times), comparisons


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=52_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--corpus", type=Path, help="reuse this corpus instead of building one")
    parser.add_argument("--keep-corpus", type=Path, help="also write the built corpus here")
    args = parser.parse_args()
    if not T0.exists():
        sys.exit(f"{T0} not found: this benchmark reads ../shared/data")
    with tempfile.TemporaryDirectory() as tmp:
        corpus = args.corpus or args.keep_corpus or Path(tmp) / "short.jsonl"
        if args.corpus is None:
            start = time.perf_counter()
            tried = build_corpus(corpus, args.rows)
            print(
                f"built {args.rows:,} novel instructions from {tried:,} candidates in "
                f"{time.perf_counter() - start:.0f} s"
            )
        lengths = [len(json.loads(line)["instruction"].split()) for line in corpus.open()]
        print(f"words per row: {min(lengths)}-{max(lengths)}, mean {statistics.mean(lengths):.1f}")
        wall, walls, summary = run_cli(corpus, args.runs)
        print(
            f"filter, every rule off: {wall:.2f} s wall (median of {args.runs}: "
            f"{', '.join(f'{w:.2f}' for w in walls)}), rows {summary['rows_in']:,}, "
            f"kept {summary['kept']:,}, dropped {summary['dropped']}, "
            f"LCS computed {summary['comparisons']:,}"
        )
        if summary["kept"] != summary["rows_in"]:
            print("WARNING: the corpus is not all novel under the filter")
        seconds, comparisons = index_alone(corpus, args.runs)
        print(
            f"index alone (add_if_novel_many, pre-encoded rows): {seconds:.2f} s "
            f"(median of {args.runs}), LCS computed {comparisons:,}"
        )


if __name__ == "__main__":
    main()
