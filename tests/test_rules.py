"""Rule filters: the paper's defaults, each switchable and replaceable."""

from __future__ import annotations

import pytest

from selfinstruct.rules import PAPER_KEYWORDS, RuleConfig, RuleFilter


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
