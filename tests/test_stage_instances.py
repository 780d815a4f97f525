"""Stage 4, instances: the output-first and input-first prompts, the instance parser on the shapes
real models write, and the instance filters (stage 6)."""

from __future__ import annotations

from conftest import SEED_FILE

from selfinstruct.records import Instance, Task, read_tasks
from selfinstruct.stages import load_templates
from selfinstruct.stages.instances import filter_instances, needs_input
from selfinstruct.stages.instances import parse as parse_instances
from selfinstruct.stages.instances import render as render_instances
from selfinstruct.stages.text import clean_input

T = load_templates()
SEEDS = read_tasks(SEED_FILE)


def pairs(text: str, classification: bool = False, instruction: str = "") -> list[tuple[str, str]]:
    parsed = parse_instances(text, classification, False, instruction)
    return [(i.input, i.output) for i in parsed.instances]


def test_instance_prompts_route_by_type_and_show_several_instances() -> None:
    example = Task(
        id="s",
        instruction="Is the number even or odd?",
        is_classification=True,
        instances=[Instance(input="4", output="Even"), Instance(input="7", output="Odd")],
    )
    out_first = render_instances(T, [example], "Label the fruit.", True, False, structured=False)
    assert isinstance(out_first, str)
    assert "Class label: Even\nInput: 4\nClass label: Odd\nInput: 7" in out_first
    assert out_first.endswith("Task: Label the fruit.\n")
    in_first = render_instances(T, [example], "Add the numbers.", False, False, structured=False)
    assert "Input: 4\nOutput: Even\n\nInput: 7\nOutput: Odd" in in_first
    no_input = Task(id="n", instruction="Name a colour.", instances=[Instance(output="Teal")])
    shown = render_instances(T, [no_input], "Name a fruit.", False, False, structured=False)
    assert "Task: Name a colour.\nOutput: Teal" in shown  # no empty "Input:" line


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
    ]  # "Neutral" has no input where the others have one: an unwritten example
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


def test_a_weak_hint_in_the_instruction_does_not_throw_answers_away() -> None:
    # Second round, real output: "this" and "the essay" made tasks look as if they needed an
    # input, and the model's valid answers were dropped as bare_answer_needs_input.
    goals = "Write down your goals for this year and the next 5 years."
    text = "Example 1\nLearn Spanish; run a marathon.\n\nExample 2\nSave for a house; travel."
    assert pairs(text, instruction=goals) == [
        ("", "Learn Spanish; run a marathon."),
        ("", "Save for a house; travel."),
    ]
    essay = "Write an essay about your town. Make sure the essay has three paragraphs."
    assert not needs_input(essay) and not needs_input("What's the best movie to watch tonight?")
    # Strong evidence still counts: a named text to work on, "given", speakers of a dialogue.
    for instruction in (
        "Summarize the news article.",
        "Create a timeline of the conversation",
        "Evaluate the tone of each speaker.",
        "Sort these numbers.",
        "Write a reply to this email.",
    ):
        assert needs_input(instruction), instruction


def test_a_bare_answer_that_works_on_an_unseen_input_or_talks_about_the_task() -> None:
    parsed = parse_instances(
        "The original sentence contains an error; it should read: I am here.",
        False,
        False,
        "Rewrite it correctly.",
    )
    assert parsed.instances == [] and parsed.dropped[0][0] == "bare_answer_needs_input"
    parsed = parse_instances(
        "This is a complex task that requires several steps.", False, False, "Plan a trip."
    )
    assert parsed.instances == [] and parsed.dropped[0][0] == "not_an_answer"


def test_examples_written_in_the_tasks_own_fields() -> None:
    antonym = "Find the antonym of the word."
    assert pairs("Word: Happy\nAntonym: Sad", instruction=antonym) == [("Word: Happy", "Sad")]
    text = "Example 1\nWord: Happy\nAntonym: Sad\n\nExample 2\nWord: Big\nAntonym: Small"
    assert pairs(text, instruction="Give me antonyms.") == [
        ("Word: Happy", "Sad"),
        ("Word: Big", "Small"),
    ]
    two = "Sentence: I love it.\nTone: warm\nSentiment: positive\nSentence: Meh.\nTone: flat\n"
    two += "Sentiment: negative"
    assert pairs(two, instruction="Rate the sentiment.") == [
        ("Sentence: I love it.\nTone: warm", "positive"),
        ("Sentence: Meh.\nTone: flat", "negative"),
    ]
    # Not fields: one answer in parts, a numbered list of one kind, a profile the task asked for.
    parts = "Structure: two people talk.\n\nContent: a trip."
    assert (
        pairs(parts, instruction="Compare the dialogues in terms of structure and content.") == []
    )
    dialogue = "Speaker 1: hi\nSpeaker 2: hey\nSpeaker 1: bye\nSpeaker 2: ok"
    assert pairs(dialogue, instruction="Write a short dialogue.") == [("", dialogue)]
    profile = "Name: John\nAge: 25"
    assert pairs(profile, instruction="Make up a profile with name and age.") == [("", profile)]


def test_one_answer_written_under_several_output_labels() -> None:
    text = "Input: Plan a party.\nOutput: Pick a date.\nOutput: Invite friends.\nOutput: Buy food."
    assert pairs(text) == [("Plan a party.", "Pick a date.\nInvite friends.\nBuy food.")]
    # Without an input, only a visibly unfinished answer goes on: numbered steps, a header.
    steps = "Output: Step 1: pick a date.\nOutput: Step 2: invite friends."
    assert pairs(steps, instruction="Plan a party.") == [
        ("", "Step 1: pick a date.\nStep 2: invite friends.")
    ]
    header = "Output: The plan:\nOutput: pick a date, invite friends."
    assert pairs(header, instruction="Plan a party.") == [
        ("", "The plan:\npick a date, invite friends.")
    ]
    # After a blank line, another example begins, even after an input (SmolLM2 in the demo:
    # "Input: ...\noutput: blue.\n\nOutput: red.").
    text = "Input: Plan a party.\nOutput: Pick a date.\n\nOutput: Invite friends."
    assert pairs(text) == [("Plan a party.", "Pick a date."), ("", "Invite friends.")]
    # Answers of a task without input, one "Output:" after another (as GPT-3 writes them in
    # the paper's runs), stay separate.
    family = "Output: We are close.\nOutput: We rarely talk.\n\nOutput: We are many."
    assert pairs(family, instruction="Tell me about your family.") == [
        ("", "We are close."),
        ("", "We rarely talk."),
        ("", "We are many."),
    ]


def test_a_class_label_left_empty_is_not_the_input_line_after_it() -> None:
    # Gemma 3 270M (base) wrote "Class label:" with nothing after it, then the input: the input
    # line was read as the label and the task kept four instances with no label at all.
    text = "Class label:\nInput: I'm a student.\nClass label:\nInput: The US is big.\n"
    assert pairs(text, classification=True) == [("I'm a student.", ""), ("The US is big.", "")]
    # A label written alone on the next line is still the label.
    text = "Class label:\nPositive\nInput: I love it.\nClass label: Negative\nInput: Bad."
    assert pairs(text, classification=True) == [("I love it.", "Positive"), ("Bad.", "Negative")]


def test_a_class_label_without_its_input_among_labelled_inputs_is_dropped() -> None:
    # Gemma 3 270M: "... Class label: Yes\nInput: 30 students\nClass label: No\n" and then the
    # next task: the last example was never written.
    text = "Class label: Yes\nInput: 10 students\nClass label: Yes\nInput: 20 students\n"
    text += "Class label: No\n"
    parsed = parse_instances(text, True, False)
    assert [(i.input, i.output) for i in parsed.instances] == [
        ("10 students", "Yes"),
        ("20 students", "Yes"),
    ]
    assert parsed.dropped == [("no_input", "No")]
    # Labels of a task that takes no input stay answers.
    assert pairs("Class label: Yes\nClass label: No\n", classification=True) == [
        ("", "Yes"),
        ("", "No"),
    ]
