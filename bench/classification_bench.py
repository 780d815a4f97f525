"""How well a model tells classification tasks apart, with similar vs random few-shot seeds.

    python bench/classification_bench.py [--held-out 60] [--model PATH] [--chat]

Leave-one-out over the project's seed tasks: each held-out seed is asked "is it
classification?" with 12 demonstrations chosen from the other seeds, either the most similar
(`similar`, the default in generate) or one fixed random set (`random`, as the paper's fixed
prompt). Prints recognised classification tasks (true positives) and false alarms for each.
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

from selfinstruct.backends.local import LocalBackend
from selfinstruct.config import LocalOptions
from selfinstruct.prompts import Demonstrations
from selfinstruct.records import read_tasks
from selfinstruct.stages import load_templates
from selfinstruct.stages.classification import parse as parse_is_classification
from selfinstruct.stages.classification import render as render_is_classification
from selfinstruct.stages.classification import sampling as sampling_is_classification

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--held-out", type=int, default=60)
    parser.add_argument("--model", default=None, help="default: the bundled SmolLM2-135M")
    parser.add_argument("--chat", action="store_true")
    args = parser.parse_args()
    seeds = read_tasks(REPO / "seed_tasks" / "seed_tasks.jsonl")
    held_out = random.Random(0).sample(seeds, args.held_out)
    templates = load_templates()
    backend = LocalBackend(args.model, LocalOptions(), chat=args.chat)
    params = sampling_is_classification(
        backend.chat, structured=False
    )  # as the loop asks: 3 tokens, chat 16
    positives = sum(bool(t.is_classification) for t in held_out)
    print(f"model {backend.model}, {len(held_out)} held-out seeds, {positives} classification")
    for choice in ("similar", "random"):
        prompts = []
        for task in held_out:
            others = [t for t in seeds if t is not task]
            demos = Demonstrations(others, choice, seed=0, tokenizer="rouge").for_classification(
                task.instruction, 12
            )
            prompt = render_is_classification(
                templates, demos, task.instruction, backend.chat, structured=False
            )
            prompts.append(prompt)
        started = time.perf_counter()
        answers = [parse_is_classification(c.text) for c in backend.generate(prompts, params)]
        pairs = list(zip(answers, held_out, strict=True))
        hits = sum(bool(a) and bool(t.is_classification) for a, t in pairs)
        alarms = sum(bool(a) and not t.is_classification for a, t in pairs)
        unread = sum(a is None for a in answers)
        print(
            f"{choice:8} recognised {hits}/{positives} classification tasks, "
            f"{alarms} false alarms, {unread} answers not read "
            f"({time.perf_counter() - started:.0f} s)"
        )


if __name__ == "__main__":
    main()
