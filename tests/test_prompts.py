"""Choosing the few-shot seeds of the classification and instance prompts (prompts.py)."""

from __future__ import annotations

from conftest import SEED_FILE

from selfinstruct.prompts import Demonstrations
from selfinstruct.records import read_tasks

SEEDS = read_tasks(SEED_FILE)


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


def test_similar_demonstrations_are_the_plain_sort_of_the_seeds() -> None:
    """The ranking kept per task (a lexsort, pools as masks) chooses what sorting each pool by
    (-score, seed order) chooses, ties included, for any instruction and pool."""
    seeds = SEEDS
    demos = Demonstrations(seeds, "similar", seed=0, tokenizer="rouge")
    position = {id(t): k for k, t in enumerate(seeds)}
    questions = [t.instruction for t in seeds[::7]] + [
        "Write a poem.",
        "Classify the sentiment of the sentence.",
        "zzz",  # shares nothing with any seed: every score ties at zero
    ]
    for question in questions:
        scores = demos._scores(question)
        for pool in (demos.classification, demos.other, demos._in_first, demos._no_input):
            for k in (1, 3, 8):
                plain = sorted(pool, key=lambda t: (-scores[position[id(t)]], position[id(t)]))
                assert demos._ranked(question, pool, k, "x") == plain[:k][::-1]
