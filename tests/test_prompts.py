"""Prompt rendering and the choice of few-shot examples: pure functions of records."""

from __future__ import annotations

from conftest import SEED_FILE

from selfinstruct.prompts import Demonstrations
from selfinstruct.records import Instance, Task, read_tasks
from selfinstruct.stages import load_templates
from selfinstruct.stages.classification import render as render_is_classification
from selfinstruct.stages.instances import render as render_instances
from selfinstruct.stages.instructions import render as render_instructions

T = load_templates()
SEEDS = read_tasks(SEED_FILE)


def test_instruction_prompt_ends_with_the_next_number_and_no_newline() -> None:
    # Defect 2: a prompt ending "9.\n" makes models write bare numbers and empty items.
    prompt = render_instructions(T, [f"Task number {i}." for i in range(8)], False, 7)
    assert isinstance(prompt, str)
    assert "1. Task number 0.\n" in prompt and prompt.endswith("8. Task number 7.\n9.")


def test_classification_prompt_ends_on_the_question_line() -> None:
    # Defect 1: with a trailing newline the "\n" stop ends the answer before it starts.
    prompt = render_is_classification(T, SEEDS[:4], "Label the fruit as sweet or sour.", False)
    assert isinstance(prompt, str)
    assert prompt.endswith("Task: Label the fruit as sweet or sour.\nIs it classification?")


def test_chat_prompts_are_messages() -> None:
    prompt = render_instructions(T, ["Do a thing.", "Do another."], True, 5)
    assert isinstance(prompt, list) and prompt[0]["role"] == "user"
    content = prompt[0]["content"]
    assert "Write 5 new tasks" in content and "continues from 3" in content
    clf = render_is_classification(T, SEEDS[:2], "Is it spam?", True)
    assert isinstance(clf, list) and clf[0]["content"].endswith("Answer Yes or No only.")


def test_instance_prompts_route_by_type_and_show_several_instances() -> None:
    example = Task(
        id="s",
        instruction="Is the number even or odd?",
        is_classification=True,
        instances=[Instance(input="4", output="Even"), Instance(input="7", output="Odd")],
    )
    out_first = render_instances(T, [example], "Label the fruit.", True, False)
    assert isinstance(out_first, str)
    assert "Class label: Even\nInput: 4\nClass label: Odd\nInput: 7" in out_first
    assert out_first.endswith("Task: Label the fruit.\n")
    in_first = render_instances(T, [example], "Add the numbers.", False, False)
    assert "Input: 4\nOutput: Even\n\nInput: 7\nOutput: Odd" in in_first
    no_input = Task(id="n", instruction="Name a colour.", instances=[Instance(output="Teal")])
    shown = render_instances(T, [no_input], "Name a fruit.", False, False)
    assert "Task: Name a colour.\nOutput: Teal" in shown  # no empty "Input:" line


def test_demonstrations_show_several_instances_and_both_answers() -> None:
    # Defect 11: the prompt asks for several examples, so the demonstrations show several.
    demos = Demonstrations(SEEDS, "similar", seed=0, tokenizer="rouge")
    clf = demos.for_instances("Decide whether the tweet is sarcastic or sincere.", True, 3)
    assert len(clf) == 3
    assert all(len({i.output for i in t.instances}) >= 2 for t in clf)
    other = demos.for_instances("Translate the phrase into French.", False, 3)
    assert sum(1 for t in other if t.instances[0].input) == 2
    assert sum(1 for t in other if not t.instances[0].input) == 1
    assert all(len(t.instances) >= 2 for t in other if t.instances[0].input)
    shown = demos.for_classification("Is the review positive or negative?", 12)
    assert sum(bool(t.is_classification) for t in shown) == 6 and len(shown) == 12


def test_similar_demonstrations_put_the_nearest_seed_last() -> None:
    demos = Demonstrations(SEEDS, "similar", seed=0, tokenizer="rouge")
    target = next(t for t in SEEDS if t.is_classification and len(t.instances) > 1)
    shown = demos.for_classification(target.instruction, 12)
    assert shown[-1].instruction == target.instruction
    again = Demonstrations(SEEDS, "similar", seed=5, tokenizer="rouge").for_classification(
        target.instruction, 12
    )
    assert [t.id for t in again] == [t.id for t in shown]  # depends on the seed file only


def test_random_demonstrations_are_one_fixed_set() -> None:
    demos = Demonstrations(SEEDS, "random", seed=3, tokenizer="rouge")
    a = demos.for_classification("Is the review positive?", 12)
    b = demos.for_classification("Write a haiku about rain.", 12)
    assert [t.id for t in a] == [t.id for t in b]
    other = Demonstrations(SEEDS, "random", seed=4, tokenizer="rouge").for_classification(
        "Is it?", 12
    )
    assert [t.id for t in other] != [t.id for t in a]
