"""Stage 3, is it classification: its prompt and its answer parser."""

from __future__ import annotations

from conftest import SEED_FILE

from selfinstruct.records import read_tasks
from selfinstruct.stages import load_templates
from selfinstruct.stages.classification import parse as parse_is_classification
from selfinstruct.stages.classification import render as render_is_classification

T = load_templates()
SEEDS = read_tasks(SEED_FILE)


def test_classification_prompt_ends_on_the_question_line() -> None:
    # Defect 1: with a trailing newline the "\n" stop ends the answer before it starts.
    prompt = render_is_classification(
        T, SEEDS[:4], "Label the fruit as sweet or sour.", False, structured=False
    )
    assert isinstance(prompt, str)
    assert prompt.endswith("Task: Label the fruit as sweet or sour.\nIs it classification?")


def test_chat_classification_prompts_are_messages() -> None:
    clf = render_is_classification(T, SEEDS[:2], "Is it spam?", True, structured=False)
    assert isinstance(clf, list) and clf[0]["content"].endswith("Answer Yes or No only.")


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


def test_a_yes_that_offers_help_is_no_answer() -> None:
    # Chat replies to the prompt as if it were small talk: not a classification answer.
    for reply in (
        "Yes, I can answer your question. What would you like to know?",
        "Yes, of course! What would you like to ask?",
        "Yes, I'd be happy to help. What",
        "Sure! Yes. How can I help you today?",
        "No problem, what do you want to classify",
        "No problem! What would you like me to do?",
    ):
        assert parse_is_classification(reply) is None, reply
    # An answer that goes on to talk about the task still counts.
    assert parse_is_classification("Yes, I think it is a classification task.") is True
    assert parse_is_classification("No, I would not call it classification.") is False
    assert parse_is_classification("Yes, the output is one of two labels?") is True
    assert parse_is_classification("No, I don't think so.") is False


def test_an_offer_is_told_by_its_shape_not_its_words() -> None:
    """Replies written for this test, not taken from any model: a Yes (or No) followed by the
    speaker committing to act, or by a request or question to the listener, and nothing about
    the task, is no verdict; the same openings followed by a reason about the task are."""
    for reply in (
        "Yes, I can do that for you.",
        "Yes! I'll take a look once you paste the list.",
        "Yes, I could give it a try.",
        "Yes. Send me the sentences and I will sort them.",
        "Yes, let me see the examples first.",
        "Yes, absolutely. Feel free to share the details whenever you're ready.",
        "Yes, we can work through it together.",
        "Yes. Please provide the text.",
        "Yes, sure, go ahead.",
        "Yes - which one did you mean?",
        "No, but I can show you how to write one.",
        "Yes, I'm here to assist.",
    ):
        assert parse_is_classification(reply) is None, reply
    for reply, verdict in (
        ("Yes, it asks for one of two labels.", True),
        ("Yes, since the output comes from a fixed set of options.", True),
        ("Yes, I can see it is a classification task.", True),
        ("No, the output is free text.", False),
        ("No. It needs a whole paragraph as its answer.", False),
        ("Yes, certainly.", True),
        ("No, this task asks you to write an essay.", False),
        ("Yes, you pick one category for each review.", True),
        ("Yes, I'd say so.", True),
        ("No, I don't believe so.", False),
        ("Yes.\n\nLet me know if you need anything else!", True),
        ("No. Hope this helps!", False),
    ):
        assert parse_is_classification(reply) is verdict, reply
