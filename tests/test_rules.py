"""Rule filters: the paper's defaults, each switchable and replaceable."""

from __future__ import annotations

import pytest

from selfinstruct.records import Instance
from selfinstruct.rules import PAPER_KEYWORDS, RuleConfig, RuleFilter
from selfinstruct.stages.instances import filter_instances


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("Name three fruits.", "too_short"),  # 3 words: the paper drops <= 3
        ("word " * 151, "too_long"),
        ("Describe the image in one sentence.", "keyword"),
        ("Please GO TO the store and list prices.", "keyword"),
        ("Write a program that sorts a list of numbers.", "banned_prefix"),
        # Defect 6: the paper matched any case (its check ran on capitalised text).
        ("write a Program that sorts a list of numbers.", "banned_prefix"),
        ("WRITE A PROGRAM to convert units.", "banned_prefix"),
        ("- Describe your favourite season in detail.", "punctuation_start"),
        ("¿Qué hora es en Tokio ahora?", "non_ascii_start"),
        ("   ", "empty"),
    ],
)
def test_paper_defaults_drop(text: str, reason: str) -> None:
    hit = RuleFilter().check(text)
    assert hit is not None and hit.reason == reason


@pytest.mark.parametrize(
    "text",
    [
        "Name three tropical fruits.",  # 4 words: kept
        "Explain how a profiler works in Python.",  # "profiler" is not the word "file"
        "Write a poem about mapping the stars.",  # "mapping" is not "map"
        "word " * 150,
    ],
)
def test_paper_defaults_keep(text: str) -> None:
    assert RuleFilter().check(text) is None


def test_keyword_detail_and_paper_list() -> None:
    assert {"image", "go to", "flowchart", "diagram", "music"} <= set(PAPER_KEYWORDS)
    hit = RuleFilter().check("Sketch a flowchart of the login process.")
    assert hit is not None and hit.detail == {"keyword": "flowchart"}


def test_every_rule_can_be_switched_off_or_replaced() -> None:
    off = RuleFilter(
        RuleConfig(
            min_words=None,
            max_words=None,
            keywords=[],
            banned_prefixes=[],
            drop_punctuation_start=False,
            drop_non_ascii_start=False,
        )
    )
    for text in ["Hi", "word " * 500, "Draw a map.", "Write a program.", "- x", "¿Qué?"]:
        assert off.check(text) is None
    custom = RuleFilter(RuleConfig(keywords=["spreadsheet"], banned_prefixes=["As an AI"]))
    assert custom.check("Describe the image in one sentence.") is None
    assert custom.check("Make a spreadsheet of monthly costs.").reason == "keyword"
    assert custom.check("As an AI model, explain rainbows.").reason == "banned_prefix"


def test_blank_entries_are_rejected() -> None:
    with pytest.raises(ValueError):
        RuleConfig(keywords=["ok", " "])


def test_instance_filters() -> None:
    verdict = filter_instances(
        [
            Instance(input="a", output="a"),
            Instance(output=""),
            Instance(input="x", output="1"),
            Instance(input="x", output="1"),
        ],
        cap=5,
    )
    assert verdict.task_reason is None and verdict.kept == [Instance(input="x", output="1")]
    assert [r for r, _ in verdict.dropped] == ["input_is_output", "empty_output", "duplicate"]
    same = filter_instances([Instance(input="x", output="1"), Instance(input="x", output="2")], 5)
    assert same.task_reason == "same_input_different_outputs" and same.kept == []
    assert filter_instances([Instance(output=" ")], 5).task_reason == "no_valid_instances"
    many = filter_instances([Instance(input=str(i), output=f"o{i}") for i in range(9)], 5)
    assert len(many.kept) == 5 and [r for r, _ in many.dropped] == ["over_cap"] * 4
    # Empty inputs may have several outputs (a task with no input has many answers).
    free = filter_instances([Instance(output="Teal"), Instance(output="Ochre")], 5)
    assert free.task_reason is None and len(free.kept) == 2


def test_a_field_header_with_nothing_after_it_is_dropped() -> None:
    # Defect 5: the paper drops an input or output that ends with ":".
    verdict = filter_instances(
        [
            Instance(input="Here is the list:", output="The sorted list is:"),
            Instance(input="List: 3, 1", output="Sorted:"),
            Instance(input="Sentence:", output="Yes"),
            Instance(input="List: 3, 1", output="1, 3"),
        ],
        5,
    )
    assert verdict.kept == [Instance(input="List: 3, 1", output="1, 3")]
    assert [r for r, _ in verdict.dropped] == ["field_header_only"] * 3
    only = filter_instances([Instance(input="Here is the list:", output="The sorted list is:")], 5)
    assert only.kept == [] and only.task_reason == "no_valid_instances"
