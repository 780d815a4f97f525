"""Completion parsers on the shapes real models write; each defect of issue 9 is pinned here.

The golden corpus of whole real completions is in test_golden.py; these are the single cases.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from selfinstruct.records import Instance
from selfinstruct.stages.classification import parse as parse_is_classification
from selfinstruct.stages.instances import needs_input
from selfinstruct.stages.instances import parse as parse_instances
from selfinstruct.stages.instructions import parse as parse_instructions
from selfinstruct.stages.text import clean_input


def pairs(text: str, classification: bool = False, instruction: str = "") -> list[tuple[str, str]]:
    parsed = parse_instances(text, classification, False, instruction)
    return [(i.input, i.output) for i in parsed.instances]


# -- instructions ---------------------------------------------------------------------------


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


# -- classification ---------------------------------------------------------------------


def test_parse_is_classification() -> None:
    assert parse_is_classification(" Yes") is True
    assert parse_is_classification("no.") is False
    assert parse_is_classification("**Yes**, it has two labels.") is True
    assert parse_is_classification("This is not a classification task.") is False
    assert parse_is_classification("It is a classification task.") is True
    assert parse_is_classification("Maybe, it depends") is None
    # Chat models: an echoed question, a stated answer, or only the definition restated.
    assert parse_is_classification("Plan a trip.\nIs it classification? Yes") is True
    assert parse_is_classification("Microwave food.\n\nThe answer is no.") is False
    assert parse_is_classification("A task is a classification task when its answer") is None
    assert parse_is_classification("") is None


# -- instances ----------------------------------------------------------------------------


def test_class_label_is_its_line_and_the_rest_is_the_input() -> None:
    # Defect 3: the label swallowed the input when the model named the field.
    assert pairs("Class label: Yes\nSentence: I am going.", True) == [
        ("Sentence: I am going.", "Yes")
    ]
    text = (
        "Class label: Positive\nReview: Loved it.\nRating: 5\n"
        "Class label: Negative\nInput: Hated it.\n"
        "Class label: Neutral"
    )
    assert pairs(text, True) == [
        ("Review: Loved it.\nRating: 5", "Positive"),
        ("Hated it.", "Negative"),
        ("", "Neutral"),
    ]
    # The label written on the next line, as the paper's parser also reads it.
    assert pairs("Class label:\nSpam\nEmail: Win now!", True) == [("Email: Win now!", "Spam")]


def test_label_and_output_mixed_up_is_not_trusted() -> None:
    parsed = parse_instances("Class label: Positive\nOutput: Negative", True, False)
    assert parsed.instances == [] and parsed.dropped[0][0] == "mixed_format"
    # The label restated as an output: a label with no input.
    assert pairs("Class label: Blue\nOutput: Blue\n\nClass label: Red\nOutput: red", True) == [
        ("", "Blue"),
        ("", "Red"),
    ]
    # An "Output:" echo after the input is not part of the input.
    assert pairs("Class label: No\nInput: 1234\nOutput: No", True) == [("1234", "No")]


def test_none_is_a_valid_output_and_no_input_markers_mean_empty_input() -> None:
    # Defect 4.
    assert pairs("Input: <noinput>\nOutput: None") == [("", "None")]
    assert pairs("Input: Not applicable\nOutput: N/A") == [("", "N/A")]
    assert pairs("Input: none\nOutput: 0") == [("", "0")]
    assert clean_input(" N/A ") == "" and clean_input("None of these") == "None of these"


def test_real_instance_formats() -> None:
    # Defect 10: Example headers, numbered labels, field names, Output before Input, case.
    assert pairs("Example 1\nList: 3, 1\nOutput: 1, 3\nExample 2\nList: 9, 4\nOutput: 4, 9") == [
        ("List: 3, 1", "1, 3"),
        ("List: 9, 4", "4, 9"),
    ]
    assert pairs("Input 1: a b\nOutput 1: b a\n\nInput 2: c d\nOutput 2: d c") == [
        ("a b", "b a"),
        ("c d", "d c"),
    ]
    assert pairs("Sentence: I go.\nOutput: Je vais.\n\nSentence: You go.\nOutput: Tu vas.") == [
        ("Sentence: I go.", "Je vais."),
        ("Sentence: You go.", "Tu vas."),
    ]
    assert pairs("Output: 4\nInput: 2+2\n\nOutput: 6\nInput: 3+3") == [("2+2", "4"), ("3+3", "6")]
    assert pairs("input: hi\noutput: HI") == [("hi", "HI")]
    assert pairs(
        "**Input:** hi\n**Output:** HI\n\n### Example 2\n**Input:** yo\n**Output:** YO"
    ) == [
        ("hi", "HI"),
        ("yo", "YO"),
    ]
    assert pairs("Paragraph: A cat.\nQuestion: What animal?\nOutput: A cat.") == [
        ("Paragraph: A cat.\nQuestion: What animal?", "A cat.")
    ]


def test_output_only_and_next_task_cut() -> None:
    text = "\nInput: 3, 4\nOutput: 7\n\nInput: 10, -2\nOutput: 8\n\nTask: Something else\nInput: x"
    assert pairs(text) == [("3, 4", "7"), ("10, -2", "8")]
    assert pairs("Output: Just the answer.") == [("", "Just the answer.")]


def test_bare_answers_count_only_for_tasks_without_input() -> None:
    # Defect 12: a chat model answers without labels.
    assert pairs("Paris is the capital.", instruction="What is the capital of France?") == [
        ("", "Paris is the capital.")
    ]
    parsed = parse_instances(
        "The article is about a new phone.", False, False, "Summarize the news article."
    )
    assert parsed.instances == [] and parsed.dropped[0][0] == "bare_answer_needs_input"
    assert needs_input("Sort the given list.") and needs_input("Translate this sentence.")
    assert not needs_input("Suggest three names for a bakery.")


def test_truncation_drops_only_the_cut_piece() -> None:
    parsed = parse_instances("Input: a\nOutput: b\n\nInput: c\nOutput: d is cut", False, True)
    assert [(i.input, i.output) for i in parsed.instances] == [("a", "b")]
    assert parsed.dropped == [("truncated", "c\nd is cut")]
    # Cut off inside an input: the complete instance before it stays.
    parsed = parse_instances("Input: a\nOutput: b\n\nInput: c is cu", False, True)
    assert [(i.input, i.output) for i in parsed.instances] == [("a", "b")]
    assert parsed.dropped == [("truncated", "c is cu")]


def test_preamble_before_the_first_input() -> None:
    parsed = parse_instances("Here are examples:\nInput: x\nOutput: y", False, False)
    assert [(i.input, i.output) for i in parsed.instances] == [("x", "y")]
    assert parsed.dropped == [("preamble", "Here are examples:")]


def test_unlabelled_examples_beside_labelled_ones() -> None:
    parsed = parse_instances("Example 1\nInput: x\nOutput: y\nExample 2\nno labels", False, False)
    assert [(i.input, i.output) for i in parsed.instances] == [("x", "y")]
    assert parsed.dropped == [("unlabelled", "no labels")]


@given(st.text(max_size=400), st.booleans(), st.booleans())
def test_parsers_never_raise(text: str, truncated: bool, flag: bool) -> None:
    parsed = parse_instructions(text, truncated, flag)
    assert all(isinstance(i, str) and i for i in parsed.instructions)
    for inst in parse_instances(text, flag, truncated, "the given text").instances:
        Instance.model_validate(inst.model_dump())
    parse_is_classification(text)


def test_talk_after_the_last_example_is_not_part_of_it() -> None:
    text = "Output: Drink water and rest.\n\nPlease provide a list of 5 tips for sleep."
    parsed = parse_instances(text, False, False, "How do I recover after a marathon?")
    assert [(i.input, i.output) for i in parsed.instances] == [("", "Drink water and rest.")]
    assert parsed.dropped == [("trailing_text", "Please provide a list of 5 tips for sleep.")]
    labelled = parse_instances(
        "Class label: Yes\nInput: 9\n\nThe next task is harder.", True, False
    )
    assert [(i.input, i.output) for i in labelled.instances] == [("9", "Yes")]
    noted = parse_instances("Output: A whale.\n\nNote: This task needs creativity.", False, False)
    assert [(i.input, i.output) for i in noted.instances] == [("", "A whale.")]
    # A real second paragraph stays.
    letter = "Output: Dear Ana,\n\nThank you for the flowers.\n\nBest, Li"
    assert pairs(letter) == [("", "Dear Ana,\n\nThank you for the flowers.\n\nBest, Li")]


def test_a_cut_inside_a_sub_item_keeps_its_task() -> None:
    text = "1. Name a bird.\n2. Name a fish.\n   - for example a tr"
    parsed = parse_instructions(text, True, continues_list=False)
    assert parsed.instructions == ["Name a bird.", "Name a fish."]
    assert parsed.dropped == [("truncated", "- for example a tr")]
