"""The ROUGE-L index must decide exactly as rouge_score does, pair for pair and row for row."""

from __future__ import annotations

import os
import random

import pytest
from conftest import SEED_FILE, jsonl_instructions, t0_instructions
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rouge_score import rouge_scorer, tokenize

from selfinstruct.similarity import RougeLIndex, _fmeasure_rows, rouge_l_fmeasure
from selfinstruct.tokens import rouge_tokenize, unicode_tokenize

SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def reference_score(earlier: str, new: str) -> float:
    # The paper's code scores each new instruction as the prediction against pool targets.
    return SCORER.score(earlier, new)["rougeL"].fmeasure


def reference_filter(
    texts: list[str], threshold: float, pool: list[str] | None = None
) -> list[tuple[int, float] | None]:
    """The paper's sequential rule with rouge_score itself: (best index, score) or None if kept."""
    kept = list(pool or [])
    out: list[tuple[int, float] | None] = []
    for text in texts:
        scores = [reference_score(k, text) for k in kept]
        best = max(scores, default=-1.0)
        if best > threshold:
            out.append((scores.index(best), best))
        else:
            kept.append(text)
            out.append(None)
    return out


def index_filter(
    texts: list[str], threshold: float, pool: list[str] | None = None, mode: str = "many", **kwargs
) -> list[tuple[int, float] | None]:
    index = RougeLIndex(threshold, kwargs.pop("tokenizer", "rouge"), **kwargs)
    for text in pool or []:
        index.add(text)
    if mode == "many":
        matches = index.add_if_novel_many(texts, probe_batch=3)
    else:
        matches = [index.add_if_novel(text) for text in texts]
    return [None if m is None else (m.index, m.score) for m in matches]


WORDS = st.sampled_from(["a", "b", "c", "d", "e", "The", "cat!", "x1", "é", "—"])
TEXTS = st.lists(WORDS, min_size=0, max_size=14).map(" ".join)
# Thresholds that real pairs can hit exactly (2L/(m+n)), where float rounding decides ties.
TIE_THRESHOLDS = st.builds(
    lambda lcs, total: 2 * lcs / total, st.integers(1, 12), st.integers(2, 28)
).filter(lambda t: 0.0 < t <= 1.0)


@given(st.text(max_size=80))
def test_rouge_tokenizer_equals_reference(text: str) -> None:
    assert rouge_tokenize(text) == tokenize.tokenize(text, None)


@given(TEXTS, TEXTS)
def test_fmeasure_bit_for_bit(a: str, b: str) -> None:
    index = RougeLIndex(0.7, "rouge")
    index.add(a)
    assert index.scores(b)[0] == reference_score(a, b)


def test_fmeasure_rows_equal_the_scalar_formula_for_every_small_case() -> None:
    """The vectorised F-measure (computed in place, provenance's hot spot) against
    rouge_score's formula for every LCS and pair of lengths up to 12, empty texts included."""
    import numpy as np

    cases = [(p, t, c) for p in range(13) for t in range(13) for c in range(min(p, t) + 1)]
    predictions = np.asarray([p for p, _, _ in cases])
    targets = np.asarray([t for _, t, _ in cases])
    lcs = np.zeros((len(cases), len(cases)))
    lcs[np.arange(len(cases)), np.arange(len(cases))] = [c for _, _, c in cases]
    f = _fmeasure_rows(lcs, targets, predictions)
    want = [rouge_l_fmeasure(c, t, p) for p, t, c in cases]
    assert [float(x) for x in np.diagonal(f)] == want
    assert not np.any(f - np.diag(np.diagonal(f)))  # no common token: 0, never NaN


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    st.lists(TEXTS, min_size=1, max_size=25),
    st.one_of(st.just(0.7), TIE_THRESHOLDS),
    st.lists(TEXTS, max_size=4),
)
def test_sequential_decisions_equal_reference(
    texts: list[str], threshold: float, pool: list[str]
) -> None:
    expected = reference_filter(texts, threshold, pool)
    assert index_filter(texts, threshold, pool, mode="one") == expected
    assert index_filter(texts, threshold, pool, mode="many") == expected
    assert index_filter(texts, threshold, pool, mode="many", prune=False) == expected


def _with_tail(prefix: str, size: int) -> str:
    return " ".join([f"w{i}" for i in range(7)] + [f"{prefix}{i}" for i in range(size)])


@pytest.mark.parametrize(("m", "n", "dropped"), [(9, 11, True), (10, 10, False), (8, 12, True)])
def test_exact_ties_are_decided_like_the_reference(m: int, n: int, dropped: bool) -> None:
    # LCS 7 over m + n = 20 tokens is 0.7 exactly on paper. rouge_score's float formula lands
    # on 0.7000000000000001 (dropped) for 9/11 and 8/12, but on 0.7 (kept) for 10/10; a
    # formula like 2·LCS/(m+n) would keep all three.
    earlier, new = _with_tail("x", m - 7), _with_tail("y", n - 7)
    assert (reference_score(earlier, new) > 0.7) is dropped
    index = RougeLIndex(0.7, "rouge")
    index.add(earlier)
    assert index.is_novel(new) is not dropped
    assert rouge_l_fmeasure(7, m, n) == reference_score(earlier, new)


def _real_instructions() -> list[str]:
    import json

    seeds = [json.loads(line)["instruction"] for line in SEED_FILE.read_text().splitlines()]
    texts = seeds + jsonl_instructions("user_oriented_instructions.jsonl")[:80]
    texts += jsonl_instructions("self_instruct_run_samples/machine_generated_instructions.jsonl")
    rng = random.Random(7)
    # Near-duplicates made by small edits, so that the comparison also covers drops.
    for text in rng.sample(texts, 60):
        words = text.split()
        i = rng.randrange(len(words))
        words[i : i + 1] = rng.choice([[], ["very"], [words[i], "also"]])
        texts.append(" ".join(words))
    rng.shuffle(texts)
    return texts


def test_real_data_decisions_equal_rouge_score() -> None:
    texts = _real_instructions()
    expected = reference_filter(texts, 0.7)
    assert sum(e is not None for e in expected) > 20  # the sample does exercise drops
    assert index_filter(texts, 0.7, mode="many") == expected
    assert index_filter(texts, 0.7, mode="one") == expected


def test_real_pair_scores_equal_rouge_score() -> None:
    rng = random.Random(3)
    texts = _real_instructions() + t0_instructions(400)
    for _ in range(300):
        a, b = rng.sample(texts, 2)
        index = RougeLIndex(0.7, "rouge")
        index.add(a)
        assert index.scores(b)[0] == reference_score(a, b)


def test_pruned_equals_exhaustive_on_templated_data() -> None:
    texts = t0_instructions(1500)
    pruned = index_filter(texts, 0.7, mode="many")
    assert index_filter(texts, 0.7, prune=False, mode="many") == pruned
    assert sum(p is None for p in pruned) < len(texts)  # near-duplicates were found


@pytest.mark.parametrize("limit", [3, 50])
def test_decisions_survive_running_out_of_code_points(limit: int) -> None:
    texts = _real_instructions()[:200]
    expected = index_filter(texts, 0.7)
    index = RougeLIndex(0.7, "rouge")
    index.encoder.codepoint_limit = limit  # as if the vocabulary had outgrown Unicode
    matches = index.add_if_novel_many(texts, probe_batch=16)
    assert [None if m is None else (m.index, m.score) for m in matches] == expected
    assert not index.encoder.codepoints


def test_incremental_api() -> None:
    index = RougeLIndex(0.7, "rouge")
    assert index.add_if_novel("Write a poem about the sea.") is None
    assert index.add_if_novel("Summarize the article in two sentences.") is None
    match = index.find_duplicate("Write a short poem about the sea.")
    assert match is not None and match.index == 0 and match.score > 0.7
    assert index.is_novel("List three uses for baking soda.")
    assert len(index) == 2
    top = index.most_similar("Write a poem about the ocean.", k=2)
    assert [m.index for m in top] == [0, 1] and top[0].score > top[1].score
    assert index.find_duplicate("!!!") is None  # no tokens: rouge_score gives 0
    with pytest.raises(ValueError):
        RougeLIndex(1.5, "rouge")


def test_unicode_tokenizer_dedups_what_the_reference_cannot() -> None:
    a = "请把这段文字翻译成英文"
    b = "请把这段文字翻译成法文"
    assert rouge_tokenize(a) == []  # the reference tokenizer sees nothing at all
    assert unicode_tokenize(a)[:3] == ["请", "把", "这"]
    assert unicode_tokenize("हिन्दी भाषा") == ["हिन्दी", "भाषा"]  # combining marks kept
    assert unicode_tokenize("Straße") == ["strasse"]
    rouge = RougeLIndex(0.7, "rouge")
    rouge.add(a)
    assert rouge.is_novel(b)
    uni = RougeLIndex(0.7, "unicode")
    uni.add(a)
    assert not uni.is_novel(b)


@st.composite
def near_duplicate_long_texts(draw: st.DrawFn) -> list[str]:
    """Long texts (30-60 tokens, so most have wide signatures) made from a few bases by a few
    random edits: the pruning for long texts meets many close calls, ties included."""
    words = st.sampled_from(["a", "b", "c", "d", "e", "f", "g", "h"])
    bases = draw(st.lists(st.lists(words, min_size=30, max_size=60), min_size=1, max_size=3))
    texts = []
    for _ in range(draw(st.integers(2, 12))):
        text = list(draw(st.sampled_from(bases)))
        for _ in range(draw(st.integers(0, 12))):
            at = draw(st.integers(0, len(text) - 1))
            text[at : at + 1] = draw(st.sampled_from([[], [draw(words)], [text[at], draw(words)]]))
        texts.append(" ".join(text))
    return texts


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(near_duplicate_long_texts(), st.one_of(st.just(0.7), TIE_THRESHOLDS))
def test_long_text_decisions_equal_reference(texts: list[str], threshold: float) -> None:
    expected = reference_filter(texts, threshold)
    assert index_filter(texts, threshold, mode="one") == expected
    assert index_filter(texts, threshold, mode="many") == expected


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.lists(st.sampled_from("abcdefghij"), max_size=30),
            st.lists(st.sampled_from("abcdefghij"), min_size=40, max_size=90),  # wide signatures
        ).map(" ".join),
        max_size=8,
    )
)
def test_signature_bounds_never_undercut_the_overlap(texts: list[str]) -> None:
    from collections import Counter

    import numpy as np

    from selfinstruct import similarity

    index = RougeLIndex(0.7, "rouge")
    encs = index._encode_many(texts)
    for a in encs:
        for b in encs:
            overlap = sum((Counter(a.seq) & Counter(b.seq)).values())
            m, n = np.array([a.length]), np.array([b.length])
            kinds = [(a.narrow, b.narrow)]
            if a.wide is not None and b.wide is not None:
                kinds.append((a.wide, b.wide))
            for ours, theirs in kinds:
                bound = similarity._signature_bound(m, n, ours[None], theirs[None])[0]
                assert overlap <= bound <= min(a.length, b.length)


def test_signature_counts_without_numpy_bitwise_count(monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np

    from selfinstruct import similarity

    rng = np.random.default_rng(0)
    a, b = (rng.integers(0, 2**63, size=(50, 16)).astype(np.uint64) for _ in range(2))
    expected = [
        sum(bin(int(x) & ~int(y)).count("1") for x, y in zip(row_a, row_b, strict=True))
        for row_a, row_b in zip(a, b, strict=True)
    ]
    assert similarity._only_in_first(a, b).tolist() == expected
    monkeypatch.delattr(np, "bitwise_count", raising=False)  # numpy < 2.0 has none
    assert similarity._only_in_first(a, b).tolist() == expected


@pytest.mark.parametrize("worth", [0.0, 2.0])
def test_decisions_do_not_depend_on_the_cascade(
    monkeypatch: pytest.MonkeyPatch, worth: float
) -> None:
    from selfinstruct import similarity

    texts = t0_instructions(1500)
    expected = index_filter(texts, 0.7, prune=False, mode="many")
    monkeypatch.setattr(similarity, "_CASCADE_WORTH", worth)  # 0: always first; 2: never
    assert index_filter(texts, 0.7, mode="many") == expected


def test_huge_token_frequencies_keep_the_decisions() -> None:
    # Order keys too large to pack with the row number take the slower sort; same decisions.
    texts = _real_instructions()
    tokens = sorted({tok for text in texts for tok in rouge_tokenize(text)})
    huge = {tok: 2**36 + i for i, tok in enumerate(tokens)}
    expected = index_filter(texts, 0.7, prune=False)
    assert index_filter(texts, 0.7, token_frequencies=huge) == expected


def test_top_matches_is_the_stable_sort_of_the_scores() -> None:
    """The block shortcut returns what a stable sort of every score returns: highest first,
    the earlier entry first on ties, ties at the k-th place included, for pools small enough
    to sort and large ones, of mostly zeros, few distinct scores or all distinct."""
    import numpy as np

    from selfinstruct.similarity import RougeLIndex, top_indices

    index = RougeLIndex(threshold=0.7, tokenizer="rouge")
    for k in range(300):
        index.add(f"entry number {k}")
    rng = np.random.default_rng(0)
    for trial in range(200):
        scores = np.round(rng.random(300), 1 if trial % 2 else 3)  # many ties, or few
        for k in (1, 5, 10, 74):
            expected = np.argsort(-scores, kind="stable")[:k].tolist()
            assert [m.index for m in index.top_matches(scores, k)] == expected
    for trial in range(300):
        n = int(rng.integers(600, 9000))
        scores = rng.random(n)
        if trial % 3 == 0:
            scores = np.round(scores, 1)
        if trial % 3 == 1:  # mostly zeros: fewer than k scores above the blocks' floor
            scores = np.where(rng.random(n) < 0.002, np.round(scores, 2), 0.0)
        for k in (1, 3, 10, 20):
            expected = np.argsort(-scores, kind="stable")[:k].tolist()
            assert top_indices(scores, k).tolist() == expected
    assert top_indices(np.zeros(0), 0).tolist() == top_indices(np.ones(700), 0).tolist() == []


def test_provenance_in_the_background_is_the_exhaustive_one() -> None:
    """`provenance` (a background thread, one job per list) gives each entry what the
    exhaustive `scores` gives against the entries before it: the ten most similar, earliest
    first on ties, and the mean; the very first entry has neither."""
    from selfinstruct.similarity import RougeLIndex

    index = RougeLIndex(threshold=0.7, tokenizer="rouge")
    rng = random.Random(3)
    words = ["write", "a", "poem", "list", "the", "given", "sentence", "classify", "story", "x"]
    texts = list(
        dict.fromkeys(" ".join(rng.choices(words, k=rng.randint(2, 9))) for _ in range(400))
    )
    for text in texts:
        index.add(text)
    jobs = [(0, 1), (0, 5), (1, 7), (37, 12), (len(texts) - 20, 20), (50, 0)]
    futures = [index.provenance(first, count) for first, count in jobs]
    for (first, count), future in zip(jobs, futures, strict=True):
        got = future.result()
        assert len(got) == count
        for entry, prov in zip(range(first, first + count), got, strict=True):
            if entry == 0:
                assert prov.most_similar == {} and prov.avg_similarity is None
                continue
            scores = index.scores(texts[entry])[:entry]
            expected = {m.text: m.score for m in index.top_matches(scores, 10)}
            assert prov.most_similar == expected
            assert list(prov.most_similar) == list(expected)
            assert prov.avg_similarity == float(scores.mean())


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_provenance_works_in_a_forked_child() -> None:
    """A child forked after the parent's provenance thread started has no such thread; it
    must start its own instead of waiting forever on the parent's."""
    from selfinstruct.similarity import RougeLIndex

    index = RougeLIndex(threshold=0.7, tokenizer="rouge")
    for text in ("write a poem", "write a story", "classify the sentence"):
        index.add(text)
    assert index.provenance(1, 2).result(timeout=30)[1].most_similar  # the parent's thread
    pid = os.fork()
    if pid == 0:  # the child: exit 0 only if its provenance comes back
        try:
            index.provenance(1, 2).result(timeout=30)
            os._exit(0)
        except BaseException:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_provenance_while_the_pool_grows_and_turns_to_ids() -> None:
    """Jobs submitted after each list while the loop keeps adding, and while the encoder runs
    out of code points (the stored sequences become tuples of ids midway), each see exactly
    the pool before their entries; a stopped run's jobs not yet started are cancelled."""
    import sys
    import threading

    from selfinstruct.similarity import RougeLIndex, _background

    rng = random.Random(5)
    vocab = [f"w{i}" for i in range(400)]
    texts = list(
        dict.fromkeys(" ".join(rng.choices(vocab, k=rng.randint(3, 9))) for _ in range(900))
    )
    index = RougeLIndex(threshold=1.0, tokenizer="rouge")  # keeps every distinct text
    index.encoder.codepoint_limit = 250  # ids from the 250th token on
    jobs = []
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # hand the GIL over as often as possible
    try:
        for start in range(0, len(texts), 7):
            batch = texts[start : start + 7]
            first = len(index)
            index.add_if_novel_many(batch)
            jobs.append((first, len(batch), index.provenance(first, len(batch))))
    finally:
        sys.setswitchinterval(switch)
    assert not index.encoder.codepoints  # the switch to ids happened
    for first, count, job in jobs:
        for entry, prov in zip(range(first, first + count), job.result(), strict=True):
            scores = index.scores(texts[entry])[:entry]
            expected = {m.text: m.score for m in index.top_matches(scores, 10)}
            assert list(prov.most_similar.items()) == list(expected.items())
            assert prov.avg_similarity == (float(scores.mean()) if entry else None)
    gate = threading.Event()
    blocker = _background().submit(gate.wait)  # holds the one thread, so the jobs wait
    many = [index.provenance(0, len(index)) for _ in range(20)]
    index.cancel_provenance()
    gate.set()
    assert blocker.result(timeout=30)
    assert all(job.cancelled() for job in many)
