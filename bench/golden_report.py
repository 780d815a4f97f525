"""What the parsers keep and drop on real completions.

    python bench/golden_report.py [--third-party DIR]

Per golden file (tests/golden/): instructions or instances kept, and drops by reason. With
`--third-party DIR`, a public run of the paper's scripts (a folder holding its
`machine_generated_instances.jsonl` and `is_clf_or_not_*.jsonl`) is parsed twice, by the
paper's rules (bench/paper_parser.py) and by ours plus our instance filters, and the instances
each keeps are counted (at most 5 per task, as both do).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO / "bench")]

from golden_corpus import GOLDEN, counts, load  # noqa: E402
from paper_parser import paper_instances, paper_instructions  # noqa: E402

from selfinstruct.rules import RuleFilter  # noqa: E402
from selfinstruct.stages.instances import filter_instances  # noqa: E402
from selfinstruct.stages.instances import parse as parse_instances  # noqa: E402
from selfinstruct.stages.instructions import parse as parse_instructions  # noqa: E402


def golden() -> None:
    for path in sorted(GOLDEN.glob("*.jsonl")):
        records = load(path.name)
        total = counts(records)
        wrong = sum("known_wrong" in r for r in records)
        print(f"\n{path.name}: {len(records)} completions, {wrong} known wrong")
        for key, value in sorted(total.items(), key=lambda kv: (not kv[0].startswith("kept"), kv)):
            print(f"  {key:40} {value:6}")


def third_party(folder: Path) -> None:
    labels: dict[str, bool] = {}
    for path in folder.glob("is_clf_or_not_*.jsonl"):
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            labels[row["instruction"]] = row["is_classification"].strip() in {"Yes", "yes", "YES"}
    rows = [json.loads(x) for x in (folder / "machine_generated_instances.jsonl").open()]
    paper = ours = 0
    drops: Counter[str] = Counter()
    lists: dict[str, bool] = {}
    for row in rows:
        response = row["instance_metadata"].get("response") or {}
        choice = (response.get("choices") or [{}])[0]
        truncated = choice.get("finish_reason") == "length"
        classification = labels.get(row["instruction"], False)
        paper += len(paper_instances(row["raw_instances"], classification, truncated)[:5])
        parsed = parse_instances(
            row["raw_instances"], classification, truncated, row["instruction"]
        )
        verdict = filter_instances(parsed.instances, 5)
        ours += len(verdict.kept)
        drops.update(reason for reason, _ in parsed.dropped + verdict.dropped)
        drops.update([verdict.task_reason] if verdict.task_reason else [])
        meta = row.get("instruction_metadata") or {}
        if meta.get("response"):
            first = meta["response"]["choices"][0]
            lists[first["text"]] = first["finish_reason"] == "length"
    print(f"\n{folder}: {len(rows)} instance completions")
    print(f"  instances kept, paper's parser:      {paper}")
    print(f"  instances kept, ours:                {ours}")
    for reason, count in drops.most_common():
        print(f"  ours dropped: {reason:24} {count}")
    rules = RuleFilter()
    theirs = sum(len(paper_instructions(text, cut)) for text, cut in lists.items())
    mine = sum(
        sum(
            rules.check(i) is None
            for i in parse_instructions(text, cut, True, first_number=9).instructions
        )
        for text, cut in lists.items()
    )
    print(f"  instruction lists: {len(lists)}; after the rules, paper {theirs}, ours {mine}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--third-party", type=Path, help="a public run's generations folder")
    args = parser.parse_args()
    golden()
    if args.third_party:
        third_party(args.third_party)
