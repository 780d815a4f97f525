"""Prompt rendering and completion parsing: pure functions, never raising."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from selfinstruct.prompts import (
    Templates,
    parse_instances,
    parse_instructions,
    parse_is_classification,
    render_instances,
    render_instructions,
)
from selfinstruct.records import Instance, Task

T = Templates.load()


def test_completion_prompt_ends_with_the_next_number() -> None:
    prompt = render_instructions(T, [f"Task number {i}." for i in range(8)], False, 8)
    assert isinstance(prompt, str)
    assert "1. Task number 0.\n" in prompt and prompt.endswith("8. Task number 7.\n9.\n")


def test_chat_prompt_is_messages() -> None:
    prompt = render_instructions(T, ["Do a thing.", "Do another."], True, 5)
    assert isinstance(prompt, list) and prompt[0]["role"] == "user"
    assert (
        "Write 5 new tasks" in prompt[0]["content"] and "continues from 3" in prompt[0]["content"]
    )


def test_parse_continued_numbered_list() -> None:
    text = (
        " Plan a picnic for six people.\n10. Name three rivers in Africa.\n11) Describe a\n"
        "sunrise in two sentences.\n\n12. Convert 3 km to miles.\n13."
    )
    parsed = parse_instructions(text, truncated=False, continues_list=True)
    assert parsed.instructions == [
        "Plan a picnic for six people.",
        "Name three rivers in Africa.",
        "Describe a sunrise in two sentences.",
        "Convert 3 km to miles.",
    ]


def test_parse_chat_chatter_bullets_and_truncation() -> None:
    text = (
        "Sure! Here are some new tasks:\n\n1. Suggest a name for a bakery.\n"
        "- List four uses of vinegar.\nTask 3: Write a toast for a wedding.\n"
        "4. Explain why the sea is salty and how"
    )
    parsed = parse_instructions(text, truncated=True, continues_list=False)
    assert parsed.instructions == [
        "Suggest a name for a bakery.",
        "List four uses of vinegar.",
        "Write a toast for a wedding.",
    ]
    assert ("chatter", "Sure! Here are some new tasks:") in parsed.dropped
    assert parsed.dropped[-1] == ("truncated", "Explain why the sea is salty and how")


def test_parse_is_classification() -> None:
    assert parse_is_classification(" Yes") is True
    assert parse_is_classification("no.") is False
    assert parse_is_classification("Maybe, it depends") is None


def test_parse_input_first_instances() -> None:
    text = (
        "\nInput: 3, 4\nOutput: 7\n\nInput: 10, -2\nOutput: 8\n\nTask: Something else\n"
        "Input: x\nOutput: y"
    )
    assert parse_instances(text, False, False) == [
        Instance(input="3, 4", output="7"),
        Instance(input="10, -2", output="8"),
    ]
    assert parse_instances("Output: Just the answer.", False, False) == [
        Instance(input="", output="Just the answer.")
    ]
    assert parse_instances(
        "Input: \nOutput: A\n\nInput: none\nOutput: B\n\nInput: z\nOutput: C", False, truncated=True
    ) == [Instance(input="", output="A"), Instance(input="", output="B")]


def test_parse_output_first_instances() -> None:
    text = (
        "Class label: Spam\nInput: Win a free phone now!\n"
        "Class label: Not spam\nInput: See you at 5."
    )
    assert parse_instances(text, True, False) == [
        Instance(input="Win a free phone now!", output="Spam"),
        Instance(input="See you at 5.", output="Not spam"),
    ]
    assert parse_instances("Class label: (e)", True, False) == [Instance(input="", output="(e)")]


def test_render_instances_routes_by_type() -> None:
    example = Task(
        id="s",
        instruction="Is it even?",
        is_classification=True,
        instances=[Instance(input="4", output="Even")],
    )
    out_first = render_instances(T, [example], "Label the fruit.", True, False)
    assert "Class label: Even\nInput: 4" in out_first and out_first.rstrip().endswith(
        "Task: Label the fruit."
    )
    in_first = render_instances(T, [example], "Add the numbers.", False, False)
    assert "Input: 4\nOutput: Even" in in_first


@given(st.text(max_size=400), st.booleans(), st.booleans())
def test_parsers_never_raise(text: str, truncated: bool, flag: bool) -> None:
    parsed = parse_instructions(text, truncated, flag)
    assert all(isinstance(i, str) and i for i in parsed.instructions)
    for inst in parse_instances(text, flag, truncated):
        Instance.model_validate(inst.model_dump())
    parse_is_classification(text)
