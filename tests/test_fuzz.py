"""Parsers and readers under random and adversarial input: they never raise unexpectedly,
and every record they return validates."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from selfinstruct.records import BadRow, Instance, Row, Task, iter_rows, row_to_task
from selfinstruct.stages.classification import parse as parse_is_classification
from selfinstruct.stages.instances import parse as parse_instances
from selfinstruct.stages.instructions import parse as parse_instructions

# Text that looks like what models write: numbered lists, labels, chatter, odd whitespace.
PIECES = st.sampled_from(
    [
        "1.",
        "2)",
        "Task 3:",
        "16.",
        "- ",
        "* ",
        "Input:",
        "Output:",
        "Class label:",
        "Example 1",
        "Task:",
        "Sure! Here are",
        "\n",
        "\n\n",
        "\r\n",
        "  ",
        "\t",
        "Yes",
        "No",
        "none",
        "[none]",
        "😀",
        "\u2028",
        "\x00",
        "Write a story.",
        "Classify the text.",
        "0" * 40,
        ":",
        "##",
    ]
)
INSTRUCTION_DROPS = {
    "preamble",
    "trailing_text",
    "truncated",
    "empty",
    "past_stop",
    "nested",
    "answer",
}
INSTANCE_DROPS = {
    "truncated",
    "mixed_format",
    "trailing_text",
    "unlabelled",
    "bare_answer_needs_input",
    "no_output",
    "preamble",
}
MODEL_TEXT = st.one_of(st.text(max_size=300), st.lists(PIECES, max_size=60).map("".join))


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(MODEL_TEXT, st.booleans(), st.booleans())
def test_completion_parsers(text: str, truncated: bool, flag: bool) -> None:
    parsed = parse_instructions(text, truncated, continues_list=flag)
    for item in parsed.instructions:
        assert isinstance(item, str) and item.strip() == item and item
    for reason, raw in parsed.dropped:
        assert reason in INSTRUCTION_DROPS and isinstance(raw, str) and raw
    parsed_instances = parse_instances(text, classification=flag, truncated=truncated)
    for inst in parsed_instances.instances:
        assert Instance.model_validate(inst.model_dump()) == inst
    for reason, raw in parsed_instances.dropped:
        assert reason in INSTANCE_DROPS and isinstance(raw, str)
    assert parse_is_classification(text) in {True, False, None}


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
ROWS = st.one_of(
    JSON_VALUES,
    st.fixed_dictionaries(
        {"instruction": JSON_VALUES},
        optional={
            "input": JSON_VALUES,
            "output": JSON_VALUES,
            "instances": JSON_VALUES,
            "id": JSON_VALUES,
            "messages": JSON_VALUES,
            "is_classification": JSON_VALUES,
        },
    ),
)


@settings(max_examples=400, deadline=None)
@given(ROWS)
def test_row_mapping_validates_or_says_why(obj: object) -> None:
    try:
        task = row_to_task(obj, "row-1")
    except (ValueError, ValidationError):  # ValidationError is a ValueError; both are reported
        return
    assert Task.model_validate(task.model_dump()) == task


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=400))
def test_reader_never_crashes_on_bytes(data: bytes) -> None:
    import tempfile

    from selfinstruct.errors import InputError

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.jsonl"
        path.write_bytes(data)
        try:
            items = list(iter_rows(path))
        except InputError:  # the one documented whole-file error (e.g. a broken JSON list)
            return
    for item in items:
        assert isinstance(item, Row | BadRow)
        if isinstance(item, Row):
            Task.model_validate(item.task.model_dump())
            json.dumps(item.raw)


@given(st.text(max_size=400), st.booleans(), st.booleans())
def test_parsers_never_raise(text: str, truncated: bool, flag: bool) -> None:
    parsed = parse_instructions(text, truncated, flag)
    assert all(isinstance(i, str) and i for i in parsed.instructions)
    for inst in parse_instances(text, flag, truncated, "the given text").instances:
        Instance.model_validate(inst.model_dump())
    parse_is_classification(text)
