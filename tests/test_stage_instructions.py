"""Stage 1, new instructions: its prompt and its list parser, on the shapes real models write
(each defect of issue 9 pinned here; whole real completions are in test_golden.py)."""

from __future__ import annotations

from conftest import SEED_FILE

from selfinstruct.records import read_tasks
from selfinstruct.stages import load_templates
from selfinstruct.stages.instructions import parse as parse_instructions
from selfinstruct.stages.instructions import render as render_instructions

T = load_templates()
SEEDS = read_tasks(SEED_FILE)


def test_instruction_prompt_ends_with_the_next_number_and_no_newline() -> None:
    # Defect 2: a prompt ending "9.\n" makes models write bare numbers and empty items.
    prompt = render_instructions(
        T, [f"Task number {i}." for i in range(8)], False, 7, structured=False
    )
    assert isinstance(prompt, str)
    assert "1. Task number 0.\n" in prompt and prompt.endswith("8. Task number 7.\n9.")


def test_chat_instruction_prompts_are_messages() -> None:
    prompt = render_instructions(T, ["Do a thing.", "Do another."], True, 5, structured=False)
    assert isinstance(prompt, list) and prompt[0]["role"] == "user"
    content = prompt[0]["content"]
    assert "Write 5 new tasks" in content and "continues from 3" in content


def test_parse_continued_numbered_list() -> None:
    text = (
        " Plan a picnic for six people.\n10. Name three rivers in Africa.\n11) Describe a\n"
        "sunrise in two sentences.\n12. Convert 3 km to miles.\n13. "
    )
    parsed = parse_instructions(text, truncated=False, continues_list=True, first_number=9)
    assert parsed.instructions == [
        "Plan a picnic for six people.",
        "Name three rivers in Africa.",
        "Describe a sunrise in two sentences.",
        "Convert 3 km to miles.",
    ]
    assert parsed.dropped == [("empty", "(an item with no text)")]


def test_chatter_words_inside_numbered_items_are_instructions() -> None:
    # Defect 7: "Here is...", "Great Britain...", "Ok, ..." as list items are real tasks.
    text = (
        " Here is a list of numbers; sort them.\n10. Great Britain has four nations; name them."
        "\n11. Ok, now explain how a bill becomes law."
    )
    parsed = parse_instructions(text, False, continues_list=True, first_number=9)
    assert parsed.instructions == [
        "Here is a list of numbers; sort them.",
        "Great Britain has four nations; name them.",
        "Ok, now explain how a bill becomes law.",
    ]
    assert parsed.dropped == []


def test_prose_after_a_blank_line_ends_the_list() -> None:
    # Defect 8: "These tasks cover many skills." is not an instruction.
    text = " Name a bird.\n10. Spell 'rhythm' backwards.\n\nThese tasks cover many skills."
    parsed = parse_instructions(text, True, continues_list=True, first_number=9)
    assert parsed.instructions == ["Name a bird.", "Spell 'rhythm' backwards."]
    # The cut-off is in the prose, so no instruction is dropped as truncated.
    assert parsed.dropped == [("trailing_text", "These tasks cover many skills.")]


def test_blank_lines_between_numbered_items_keep_the_list() -> None:
    text = "1. Name a bird.\n\n2. Name a fish.\n\n3. Name a tree."
    parsed = parse_instructions(text, False, continues_list=False)
    assert parsed.instructions == ["Name a bird.", "Name a fish.", "Name a tree."]


def test_items_past_the_stop_are_dropped_as_such() -> None:
    # Defect 9: 8 shown, the list stops at item 16, so at most 7 new instructions.
    text = " A one.\n" + "".join(f"{n}. Item number {n}.\n" for n in range(10, 18))
    parsed = parse_instructions(text, False, continues_list=True, first_number=9, max_items=7)
    assert len(parsed.instructions) == 7 and parsed.instructions[-1] == "Item number 15."
    assert [r for r, _ in parsed.dropped] == ["past_stop", "past_stop"]


def test_chat_preamble_list_debris_and_bold_titles() -> None:
    # Defect 12: a preamble, a number without its dot, markdown titles.
    text = (
        "Here are the tasks that a helpful assistant could do:\n\n"
        "1. Write a limerick about a cat.\n"
        "2 Reimagine a restaurant menu for children.\n"
        "3. **Trip planning**: Plan a three-day trip to Lisbon.\n"
        '4. "Explain how vaccines work."\n'
        "5. Sure"
    )
    parsed = parse_instructions(text, True, continues_list=False)
    assert parsed.instructions == [
        "Write a limerick about a cat.",
        "Reimagine a restaurant menu for children.",
        "Plan a three-day trip to Lisbon.",
        "Explain how vaccines work.",
    ]
    assert parsed.dropped == [
        ("preamble", "Here are the tasks that a helpful assistant could do:"),
        ("truncated", "Sure"),
    ]


def test_sub_items_and_double_numbers_in_chat_lists() -> None:
    text = (
        "Sure, here are seven tasks:\n\n"
        "1. 1. **Convert the description into JSON.**\n"
        "   - This is a very simple task that needs a\n     function.\n"
        "   - 2. Another note.\n\n"
        "2. 2. Name three rivers in Asia.\n"
        "   Answer: the Yangtze, the Ganges and the Mekong."
    )
    parsed = parse_instructions(text, False, continues_list=False)
    assert parsed.instructions == [
        "Convert the description into JSON.",
        "Name three rivers in Asia.",
    ]
    assert parsed.dropped == [
        ("nested", "- This is a very simple task that needs a function."),
        ("nested", "- 2. Another note."),
        ("answer", "Answer: the Yangtze, the Ganges and the Mekong."),
        ("preamble", "Sure, here are seven tasks:"),
    ]


def test_a_leading_number_that_is_not_due_is_kept() -> None:
    text = "1. Name a bird.\n7 friends share 3 pizzas equally; how much does each get?"
    parsed = parse_instructions(text, False, continues_list=False)
    assert parsed.instructions == [
        "Name a bird. 7 friends share 3 pizzas equally; how much does each get?"
    ]


def test_chat_reply_without_numbers_and_a_preamble_where_item_nine_was_due() -> None:
    parsed = parse_instructions(
        "Sure! Here you go:\nWrite a haiku about frost.\nList three uses of salt.", False, False
    )
    assert parsed.instructions == ["Write a haiku about frost.", "List three uses of salt."]
    assert parsed.dropped == [("preamble", "Sure! Here you go:")]
    parsed = parse_instructions(" Sure! Here are more tasks:\n10. Name a fish.", False, True)
    assert parsed.instructions == ["Name a fish."]
    assert parsed.dropped == [("preamble", "Sure! Here are more tasks:")]


def test_text_after_a_blank_first_line_is_the_first_item() -> None:
    parsed = parse_instructions("\n\nName a bird.\n10. Name a fish.", False, True)
    assert parsed.instructions == ["Name a bird.", "Name a fish."]


def test_a_cut_inside_a_sub_item_keeps_its_task() -> None:
    text = "1. Name a bird.\n2. Name a fish.\n   - for example a tr"
    parsed = parse_instructions(text, True, continues_list=False)
    assert parsed.instructions == ["Name a bird.", "Name a fish."]
    assert parsed.dropped == [("truncated", "- for example a tr")]
