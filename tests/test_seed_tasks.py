"""The project's own seed tasks: schema, coverage, and no near-duplicates."""

from __future__ import annotations

import json

from conftest import SEED_FILE
from rouge_score import rouge_scorer

from selfinstruct.records import read_tasks
from selfinstruct.rules import RuleFilter


def test_schema_and_coverage() -> None:
    raw = [json.loads(line) for line in SEED_FILE.read_text().splitlines()]
    assert len(raw) >= 175
    for row in raw:
        assert set(row) == {"id", "name", "instruction", "instances", "is_classification"}
        assert row["instances"] and all(set(i) == {"input", "output"} for i in row["instances"])
        assert all(i["output"].strip() for i in row["instances"])
    assert len({row["id"] for row in raw}) == len(raw)
    assert len({row["name"] for row in raw}) == len(raw)
    tasks = read_tasks(SEED_FILE)
    assert sum(t.is_classification for t in tasks) / len(tasks) >= 0.25
    with_input = sum(any(i.input for i in t.instances) for t in tasks)
    assert with_input / len(tasks) >= 0.40


def test_no_two_seed_instructions_are_near_duplicates() -> None:
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    texts = [t.instruction for t in read_tasks(SEED_FILE)]
    worst = max(
        scorer.score(texts[j], texts[i])["rougeL"].fmeasure
        for i in range(len(texts))
        for j in range(i)
    )
    assert worst <= 0.7


def test_seed_instructions_pass_the_rule_filters() -> None:
    rules = RuleFilter()
    assert [t.id for t in read_tasks(SEED_FILE) if rules.check(t.instruction)] == []
