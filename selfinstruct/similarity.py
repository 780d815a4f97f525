"""Exact ROUGE-L novelty filtering that never compares most pairs.

Decisions are bit-for-bit those of `rouge_score.rouge_scorer.RougeScorer(["rougeL"])` F-measure
(no stemmer): the same tokenizer, the same LCS, and the same float operations for the score, so a
pair that lands exactly on the threshold is decided the same way. Speed comes from two places:

1. Pruning. ROUGE-L F1 is 2·LCS/(m+n) and LCS ≤ the multiset token overlap ≤ min(m, n). A pair
   can only score above t if the lengths are close (length filter) and the two token multisets
   share at least ⌈t·m/(2-t)⌉ tokens, which implies that their *prefixes* under one global token
   order (rarest first) intersect (prefix filtering, as in AllPairs/PPJoin). Only candidates
   found through prefix postings are compared, and each posting is first checked against the
   prefix principle for its own pair. A pair's bound is the least of PPJoin's positional bound
   and a signature bound on the multiset overlap (one hashed bit per token occurrence), which
   rejects nearly all the pairs of short texts that only share common words. The bounds use a
   threshold a hair below the real one, so float rounding can make them looser, never wrong.
2. rapidfuzz's bit-parallel C++ LCS on token-id strings (each token becomes one code point),
   for the few pairs whose bound still reaches the threshold, best bound first.

The index is incremental (add / find_duplicate / is_novel) because `generate` grows its pool
inside the loop; `filter` uses it in one sequential pass.
"""

from __future__ import annotations

import functools
import math
import os
from array import array
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from rapidfuzz import process
from rapidfuzz.distance import LCSseq

from selfinstruct.tokens import (
    ID_BITS,
    ID_MASK,
    TOKENIZERS,
    TokenEncoder,
    TokenizerName,
    as_ids,
    symbol_ids,
)


def rouge_l_fmeasure(lcs: int, target_len: int, prediction_len: int) -> float:
    """rouge_score's F-measure from an LCS length, with the very same float operations."""
    if target_len == 0 or prediction_len == 0:
        return 0.0
    precision = lcs / prediction_len
    recall = lcs / target_len
    if precision + recall > 0:
        return 2 * precision * recall / (precision + recall)
    return 0.0


def _fmeasure_rows(
    lcs: np.ndarray, target_lens: np.ndarray, prediction_lens: np.ndarray
) -> np.ndarray:
    """`rouge_l_fmeasure` for each row of `lcs` (float64: one prediction per row, one target per
    column), in place of `lcs`. numpy's float64 +, *, / are IEEE-exact like Python's, so the
    values are equal. In place and in few passes, since provenance runs it on a list against
    the whole pool (it was a third of provenance's CPU at 52,000 entries)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = lcs / target_lens
        precision = np.divide(lcs, prediction_lens[:, None], out=lcs)
        total = precision + recall
        np.multiply(precision, 2, out=precision)
        np.multiply(precision, recall, out=precision)
        f = np.divide(precision, total, out=precision)
    # 0/0 is what every pair rouge_score scores 0 gives here: no common token (precision and
    # recall 0), or an empty text (its LCS is 0, so a division by its length 0).
    np.copyto(f, 0.0, where=np.isnan(f))
    return f


@dataclass(frozen=True, slots=True)
class Provenance:
    """Where an instruction stands against the pool it joined: the paper's `most_similar`
    (the ten most similar earlier entries, with ROUGE-L) and `avg_similarity_score`."""

    most_similar: dict[str, float]
    avg_similarity: float | None


def no_provenance(count: int) -> Future[list[Provenance]]:
    """`count` empty provenances (`--no-provenance`), as a finished job."""
    done: Future[list[Provenance]] = Future()
    done.set_result([Provenance({}, None)] * count)
    return done


@functools.cache
def _background() -> ThreadPoolExecutor:
    # One thread: jobs finish in the order they were given. rapidfuzz's cdist releases the GIL,
    # so the exhaustive comparisons run beside the loop (O(pool) per instruction: at 16,000
    # entries they were a third of a 512-in-flight client's CPU, on its one thread).
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="selfinstruct-provenance")


if hasattr(os, "register_at_fork"):
    # A forked child has none of its parent's threads: it starts its own pool when it needs one.
    os.register_at_fork(after_in_child=_background.cache_clear)


@functools.cache
def _cores() -> int:
    """The cores this process may use: its CPU affinity, within a cgroup v2 quota if one is set
    (a container limited to 2 CPUs on a large host sees the host's cores in its affinity)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            return max(1, min(cores or 1, int(quota) // int(period)))
    except (OSError, ValueError):
        pass
    return cores or 1


_TOP_BLOCK = 64  # entries per block in `top_indices`


def top_indices(scores: np.ndarray, k: int) -> np.ndarray:
    """The indices of the k highest `scores`, highest first and the earlier entry first on
    ties: what a stable sort of the negated scores gives, without sorting the whole pool."""
    n = len(scores)
    if k <= 0:
        return np.empty(0, dtype=np.intp)
    if n < _TOP_BLOCK * k:
        return np.argsort(-scores, kind="stable")[:k]
    # The k-th highest of the blocks' maxima is at most the k-th highest score (k blocks each
    # hold one score at least that high). np.partition of the whole pool would give the k-th
    # score exactly, but degrades on ROUGE-L's many equal scores (1.6 ms at 16,000 entries).
    maxima = np.maximum.reduceat(scores, np.arange(0, n, _TOP_BLOCK))
    floor = np.partition(maxima, len(maxima) - k)[len(maxima) - k]
    # Scores above the floor lie in fewer than k blocks, so there are few of them.
    above = np.flatnonzero(scores > floor)
    above = above[np.lexsort((above, -scores[above]))]
    if len(above) >= k:
        return above[:k]
    # Fewer than k above it: the floor is the k-th score, and ties at it go earliest first.
    return np.concatenate([above, np.flatnonzero(scores == floor)[: k - len(above)]])


@dataclass(frozen=True, slots=True)
class Match:
    """An indexed entry and its ROUGE-L F-measure against the queried text."""

    index: int
    text: str
    score: float


@dataclass(frozen=True, slots=True)
class _Encoded:
    seq: str | tuple[int, ...]  # one symbol per token: a code point, or an int past that range
    elements: np.ndarray  # the longest prefix any search needs, in the global order (int64)
    length: int
    narrow: np.ndarray  # its _NARROW_BITS signature (see _signatures)
    wide: np.ndarray | None  # its _WIDE_BITS signature, for texts of _WIDE_FROM tokens or more


# Pruning uses a threshold this far below the real one: far larger than any float error in the
# bounds, far smaller than any gap between two distinct ROUGE-L values of real text.
_MARGIN = 1e-9
# A token occurrence (an "element") is (k-th occurrence << ID_BITS | token id).
# A posting is (entry index, position of the element in the entry's order), packed likewise.
_POS_BITS = 32
_POS_MASK = (1 << _POS_BITS) - 1
# Postings are keyed by element and the entry's length bucket (see _buckets).
_NO_ELEMENTS = np.zeros(0, dtype=np.int64)
_BUCKET_BITS = 7
# Searches run first at this bar, whose prefix is much shorter: most near-duplicates score above
# it, and once one is found nothing below its score matters. Only if none is found does the
# search run again at the real threshold. That first pass is wasted on rows that are novel or
# only a little similar, so it runs only while enough recent rows (a moving average) scored
# above it: on templated prompts (38% of rows) it pays, on distinct short instructions (0%) it
# would cost 15%.
_CASCADE = 0.9
_CASCADE_WORTH = 0.15
_CASCADE_MEMORY = 0.9  # weight of the old average at each batch
# Signatures: each element (token occurrence) of a text sets one hashed bit. An element of A
# whose bit is not set in B's signature is not in B, so m - popcount(sig_A & ~sig_B) caps the
# multiset overlap, hence the LCS. Short texts of common words pass the prefix and positional
# filters in droves (millions of pairs for 52,000 short instructions) yet share few tokens; this
# bound rejects nearly all of them before any LCS. 128 bits suit short texts; long ones would
# fill them, so texts of _WIDE_FROM tokens or more also get 1024 bits, used when both are long.
_NARROW_BITS = 128
_WIDE_BITS = 1024
_WIDE_FROM = 40
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing: the top bits are well mixed


def _signatures(row: np.ndarray, elements: np.ndarray, rows: int, bits: int) -> np.ndarray:
    """(rows, bits / 64) uint64 signatures; `row` says which row each element belongs to."""
    with np.errstate(over="ignore"):
        bit = (elements.astype(np.uint64) * _GOLDEN) >> np.uint64(65 - bits.bit_length())
    flags = np.zeros((rows, bits), dtype=bool)
    flags[row, bit.astype(np.int64)] = True
    # Only popcounts of AND-NOTs are ever taken, so the bit layout inside a word is irrelevant.
    return np.packbits(flags, axis=1).view(np.uint64)


def _only_in_first(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per row, how many bits are set in `a` but not in `b` ((k, words) uint64 arrays)."""
    words = a & ~b
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        counts = np.bitwise_count(words)
    else:
        counts = _popcount16()[words.view(np.uint16)]
    # Column by column: numpy's sum along a short last axis is several times slower.
    total = counts[:, 0].astype(np.int64)
    for column in range(1, counts.shape[1]):
        total += counts[:, column]
    return total


@functools.cache
def _popcount16() -> np.ndarray:
    return np.array([bin(i).count("1") for i in range(1 << 16)], dtype=np.uint8)


def _signature_bound(
    m: np.ndarray, n: np.ndarray, ours: np.ndarray, theirs: np.ndarray
) -> np.ndarray:
    """Upper bounds on the multiset overlap of pairs of lengths m, n with these signatures."""
    return np.minimum(m - _only_in_first(ours, theirs), n - _only_in_first(theirs, ours))


def _both_wide(m: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Whether both texts of each pair have a wide signature (then only it is used)."""
    return (m >= _WIDE_FROM) & (n >= _WIDE_FROM)


def _rows(array: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """array[rows] for a 2-D array: take() gathers rows far faster than fancy indexing."""
    return np.take(array, rows, axis=0)


def _wide_stack(encs: Sequence[_Encoded]) -> np.ndarray:
    """The wide signatures of `encs` as rows; zeros (never used) for short texts."""
    none = np.zeros(_WIDE_BITS // 64, dtype=np.uint64)
    return np.stack([none if e.wide is None else e.wide for e in encs])


def _grown(array: np.ndarray, used: int) -> np.ndarray:
    """`array` with twice the rows (at least 1024), its first `used` rows kept."""
    grown = np.zeros((max(1024, 2 * len(array)), *array.shape[1:]), dtype=array.dtype)
    grown[:used] = array[:used]
    return grown


def _buckets(lengths: np.ndarray) -> np.ndarray:
    """Length buckets: the bit length of each length (one octave per bucket)."""
    safe = np.maximum(lengths, 1)
    return np.where(lengths < 1, 0, np.floor(np.log2(safe)).astype(np.int64) + 1)


def _by_bound(pair: tuple[float, int]) -> tuple[float, int]:
    return -pair[0], pair[1]


def _prefix_lengths(t: float, lengths: np.ndarray) -> np.ndarray:
    """How many of its first elements (global order) each text must index or probe at t.

    Any pair scoring above t shares at least ceil(t·m/(2-t)) token occurrences, so a text of m
    tokens that shares any must share one among its first m - that + 1.
    """
    need = np.maximum(1, np.ceil(t * lengths / (2.0 - t)).astype(np.int64))
    return np.maximum(0, lengths - need + 1)


def _rarest_first(row: np.ndarray, ids: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Token ids sorted by row, then by order key (`row` ascending, `keys` the ids' keys)."""
    shift = max(int(keys.max(initial=0)).bit_length(), ID_BITS)  # the id is in the low bits
    if len(row) and int(row[-1]).bit_length() + shift <= 62 and keys.min() >= 0:
        # One sort of (row, key) packed in an int64, whose low bits give the id back: several
        # times faster than lexsort, which mattered for long prompts.
        return np.sort((row << shift) | keys) & ID_MASK
    return ids[np.lexsort((keys, row))]


class _Hits(NamedTuple):
    """Postings met by a batch of probes: one slot per posting, or per pair once grouped."""

    probe: np.ndarray  # the probe's position in its batch
    i: np.ndarray  # the shared element's position in the probe's order
    entry: np.ndarray  # the pool entry
    j: np.ndarray  # the shared element's position in the entry's order
    m: np.ndarray  # the probe's length
    n: np.ndarray  # the entry's length
    bound: np.ndarray  # an upper bound on the pair's multiset overlap (hence on its LCS)

    def take(self, which: np.ndarray) -> _Hits:
        return _Hits(*(field[which] for field in self))

    def need(self, bar: float) -> np.ndarray:
        """The overlap each pair needs to score `bar`: ceil(bar·(m+n)/2), and at least 1."""
        return np.maximum(np.ceil(bar * (self.m + self.n) / 2.0), 1)


def _pairs(hits: _Hits) -> _Hits:
    """One slot per (probe, entry) pair: its last posting, bounded by PPJoin's positional bound.

    The shared elements met so far plus what could still match after the last one cap the
    multiset overlap; the bound already there (a signature bound) is kept if tighter.
    """
    key = (hits.probe << _POS_BITS) | hits.entry
    hits = hits.take(np.argsort(key, kind="stable"))  # stable: keeps probe order within a pair
    key = (hits.probe << _POS_BITS) | hits.entry
    if len(key) == 0:
        return hits
    is_last = np.empty(len(key), dtype=bool)
    np.not_equal(key[1:], key[:-1], out=is_last[:-1])
    is_last[-1] = True
    last = np.flatnonzero(is_last)
    shared = np.diff(last, prepend=-1)
    pairs = hits.take(last)
    positional = shared + np.minimum(pairs.m - 1 - pairs.i, pairs.n - 1 - pairs.j)
    return pairs._replace(bound=np.minimum(pairs.bound, positional))


@dataclass(frozen=True)
class EncodedBatch:
    """Texts encoded in another process by a `WorkerEncoder`, for `add_if_novel_encoded`."""

    sequences: list[str | tuple[int, ...]]
    new_tokens: list[str]  # the tokens the worker met first in these texts, in that order
    vocabulary_before: int  # the worker's vocabulary before these texts, to check the pairing


class WorkerEncoder:
    """Encodes texts for a `RougeLIndex` that lives in another process.

    The index and this encoder are built from the same token frequencies and the same pool,
    in the same order, so their encoders assign every token the same symbol; each batch then
    carries the tokens it met first, which the index adds before deciding (in the same order),
    so the two stay identical. `add_if_novel_encoded` checks the pairing and refuses a batch
    whose encoder has drifted, rather than deciding on wrong symbols.
    """

    def __init__(
        self,
        tokenizer: TokenizerName,
        token_frequencies: Mapping[str, int] | None,
        pool: Iterable[str],
    ) -> None:
        self.tokenize = TOKENIZERS[tokenizer]
        self._encoder = TokenEncoder(token_frequencies)
        for text in pool:
            self._encoder.encode(self.tokenize(text))

    def encode(self, tokens: Sequence[list[str]]) -> EncodedBatch:
        """The sequences of these tokenized texts, with the tokens first met in them."""
        before = len(self._encoder)
        sequences = [self._encoder.encode(toks) for toks in tokens]
        return EncodedBatch(sequences, self._encoder.tokens_from(before), before)


class RougeLIndex:
    """An incremental pool of texts that answers "is this new text novel enough?" exactly.

    `threshold`: a text is a duplicate when its ROUGE-L F-measure with some entry is greater than
    this (the paper's rule: keep only if every score is below 0.7; exactly 0.7 is kept).
    `token_frequencies`: optional document frequencies used to order tokens rarest-first; a
    better order means shorter posting lists (any order gives the same decisions). It is frozen
    at construction so that every stored prefix stays valid as the pool grows.
    `prune=False` compares every pair (the exhaustive reference, for tests and benchmarks).
    """

    def __init__(
        self,
        threshold: float,
        tokenizer: TokenizerName,
        token_frequencies: Mapping[str, int] | None = None,
        *,
        prune: bool = True,
    ) -> None:
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be within [0, 1], got {threshold}")
        self.threshold = threshold
        self.tokenizer: TokenizerName = tokenizer
        self.prune = prune
        self.encoder = TokenEncoder(token_frequencies)
        self._tokenize = TOKENIZERS[tokenizer]
        self._t = max(0.0, threshold - _MARGIN)
        self.comparisons = 0  # LCS computations done, for benchmarks
        self._cascade_share = 1.0  # moving share of searched rows scoring above _CASCADE
        self._texts: list[str] = []
        self._seqs: list[str | tuple[int, ...]] = []
        self._lens: list[int] = []
        self._lens_np = np.zeros(0, dtype=np.int64)  # capacity-doubled copy of _lens
        self._narrow = np.zeros((0, _NARROW_BITS // 64), dtype=np.uint64)  # same capacity
        self._wide_row = np.zeros(0, dtype=np.int64)  # same capacity: entry -> row in _wide
        self._wide = np.zeros((0, _WIDE_BITS // 64), dtype=np.uint64)  # capacity-doubled
        self._n_wide = 0
        # (element << _BUCKET_BITS | length bucket) -> [entry << _POS_BITS | position in entry]
        self._postings: dict[int, array[int]] = {}
        self._top_bucket = 0  # the largest length bucket any entry is in
        self._exact: dict[str | tuple[int, ...], int] = {}
        self._codepoints = True
        # Provenance jobs given and maybe not done, oldest first (they finish in that order).
        self._pending: deque[Future[list[Provenance]]] = deque()

    def __len__(self) -> int:
        return len(self._texts)

    @property
    def texts(self) -> list[str]:
        return self._texts

    def tokenize(self, text: str) -> list[str]:
        return self._tokenize(text)

    # -- encoding -------------------------------------------------------------------------

    def _sync_symbol_kind(self) -> None:
        # The encoder ran out of code points: stored sequences become tuples of ids too. Ids,
        # hence prefixes and postings, do not change.
        if self._codepoints and not self.encoder.codepoints:
            self._codepoints = False
            self._seqs = [as_ids(seq) for seq in self._seqs]
            self._exact = {as_ids(seq): i for seq, i in self._exact.items()}

    def _encode(self, text: str, tokens: list[str] | None = None) -> _Encoded:
        return self._encode_many([text], [tokens] if tokens is not None else None)[0]

    def _encode_many(
        self,
        texts: Sequence[str],
        tokens: Sequence[list[str]] | None = None,
        encoded: Sequence[str | tuple[int, ...]] | None = None,
    ) -> list[_Encoded]:
        """Encode texts to symbol sequences and their rarest-first prefix elements.

        `encoded`: the sequences, already made by an encoder kept identical to `self.encoder`.
        """
        if encoded is None:
            if tokens is None:
                tokens = [self._tokenize(text) for text in texts]
            encoded = [self.encoder.encode(toks) for toks in tokens]
        self._sync_symbol_kind()
        seqs = [seq if self._codepoints else as_ids(seq) for seq in encoded]
        lengths = [len(seq) for seq in seqs]
        ids = symbol_ids(seqs)
        counts = np.asarray(lengths, dtype=np.int64)
        limits = _prefix_lengths(self._t, counts).tolist()
        row = np.repeat(np.arange(len(lengths)), counts)
        ids = _rarest_first(row, ids, self.encoder.order_keys[ids])
        positions = np.arange(len(ids))
        run_start = np.ones(len(ids), dtype=bool)
        if len(ids) > 1:
            run_start[1:] = (ids[1:] != ids[:-1]) | (row[1:] != row[:-1])
        occurrence = positions - np.maximum.accumulate(np.where(run_start, positions, 0))
        elements = (occurrence << ID_BITS) | ids
        # `row` is still in order: the sort kept each row's elements together.
        narrow = _signatures(row, elements, len(seqs), _NARROW_BITS)
        wide: Sequence[np.ndarray | None] = [None] * len(seqs)
        if max(lengths, default=0) >= _WIDE_FROM:
            signatures = _signatures(row, elements, len(seqs), _WIDE_BITS)
            wide = [
                sig if m >= _WIDE_FROM else None for sig, m in zip(signatures, lengths, strict=True)
            ]
        starts = np.cumsum(counts) - counts
        return [
            _Encoded(seq, elements[start : start + limit], m, narrow[k], wide[k])
            for k, (seq, start, limit, m) in enumerate(
                zip(seqs, starts.tolist(), limits, lengths, strict=True)
            )
        ]

    # -- queries --------------------------------------------------------------------------

    def _lookup(
        self, encs: Sequence[_Encoded], bar: float
    ) -> tuple[np.ndarray, np.ndarray, list[array[int]]]:
        """Pool posting lists that may hold an entry scoring above `bar`, for many probes.

        Returns, per non-empty list: the probe it is for, the probe position of its element, and
        the list. Postings are split by entry length, and position i reads only the lengths that
        can still reach `bar`: an entry of length n first met at position i shares at most
        m - i tokens, so it needs n <= 2(m - i)/bar - m. For a fixed n the positions skipped
        form a suffix, so the counts `_bounded` builds for earlier-met entries stay valid.
        """
        lengths = np.fromiter((e.length for e in encs), np.int64, len(encs))
        counts = _prefix_lengths(bar, lengths)
        total = int(counts.sum())
        if total == 0 or not self._postings:
            return _NO_ELEMENTS, _NO_ELEMENTS, []
        elements = np.concatenate(
            [e.elements[:p] for e, p in zip(encs, counts.tolist(), strict=True)]
        )
        probe = np.repeat(np.arange(len(encs)), counts)
        starts = np.cumsum(counts) - counts
        pos = np.arange(total) - np.repeat(starts, counts)
        m = lengths[probe]
        low = _buckets(np.maximum(1, np.ceil(m * bar / (2.0 - bar)).astype(np.int64)))
        if bar > 0:
            reach = np.floor(2.0 * (m - pos) / bar - m).astype(np.int64)
            high = np.minimum(_buckets(np.maximum(reach, 0)), self._top_bucket)
        else:
            high = np.full(total, self._top_bucket)
        width = high - low + 1
        keys, owners = [], []
        base = elements << _BUCKET_BITS
        # One bucket offset at a time: an entry sits in one bucket, so its hits stay in order.
        for w in range(int(width.max(initial=0))):
            take = np.flatnonzero(width > w)
            keys.append(base[take] | (low[take] + w))
            owners.append(take)
        if not keys:
            return _NO_ELEMENTS, _NO_ELEMENTS, []
        key_arr = np.concatenate(keys)
        owner = np.concatenate(owners)
        found = list(map(self._postings.get, key_arr.tolist()))
        hit_lists = list(filter(None, found))  # lists are never empty: None is a miss
        if not hit_lists:
            return _NO_ELEMENTS, _NO_ELEMENTS, []
        hit_owner = owner[np.fromiter(map(bool, found), bool, len(found))]
        return probe[hit_owner], pos[hit_owner], hit_lists

    def _bounded(
        self,
        probes: Sequence[_Encoded],
        probe_of: np.ndarray,
        probe_pos: np.ndarray,
        hit_lists: list[array[int]],
        bar: float,
    ) -> list[tuple[int, list[int], list[float]]]:
        """Candidates that may score above `bar`, each with an upper bound on its score.

        Hit list k belongs to probe probe_of[k], at probe position probe_pos[k]. Returns
        (probe, candidates, bounds) for the probes that have candidates.
        """
        hits = self._hits(probes, probe_of, probe_pos, hit_lists, bar)
        pairs = _pairs(hits)
        keep = np.flatnonzero(pairs.bound >= pairs.need(bar))
        pairs = self._with_wide_bounds(probes, pairs.take(keep))
        pairs = pairs.take(np.flatnonzero(pairs.bound >= pairs.need(bar)))
        if len(pairs.probe) == 0:
            return []
        upper = (2.0 * pairs.bound / (pairs.m + pairs.n)).tolist()
        cands = pairs.entry.tolist()
        starts = np.flatnonzero(np.diff(pairs.probe, prepend=-1)).tolist()  # sorted by probe
        ends = [*starts[1:], len(cands)]
        return [
            (int(pairs.probe[a]), cands[a:b], upper[a:b]) for a, b in zip(starts, ends, strict=True)
        ]

    def _hits(
        self,
        probes: Sequence[_Encoded],
        probe_of: np.ndarray,
        probe_pos: np.ndarray,
        hit_lists: list[array[int]],
        bar: float,
    ) -> _Hits:
        """The postings that may still lead to a pair scoring above `bar`, in their order."""
        counts = np.fromiter(map(len, hit_lists), np.int64, len(hit_lists))
        packed = np.frombuffer(b"".join(hit_lists), dtype=np.int64)
        probe = np.repeat(probe_of, counts)
        entry = packed >> _POS_BITS
        lengths = np.fromiter((e.length for e in probes), np.int64, len(probes))
        m, n = lengths[probe], self._lens_np[entry]
        i, j = np.repeat(probe_pos, counts), packed & _POS_MASK
        hits = _Hits(probe, i, entry, j, m, n, bound=np.minimum(m, n))
        # A shared element at (i, j) can be the first of a pair sharing `need` elements only if
        # i <= m - need and j <= n - need (the prefix principle, for this very pair). Past that
        # point every later shared element fails too, so what is dropped is a suffix of the
        # pair's shared elements, and the positional bound taken at the last kept one holds.
        need = hits.need(bar)
        hits = hits.take(np.flatnonzero((hits.i <= m - need) & (hits.j <= n - need)))
        # The narrow signature bound is per pair, so it can drop postings before they are
        # grouped. Pairs of long texts get the wide one after grouping: they share many postings.
        narrow = np.flatnonzero(~_both_wide(hits.m, hits.n))
        ours = _rows(np.stack([e.narrow for e in probes]), hits.probe[narrow])
        theirs = _rows(self._narrow, hits.entry[narrow])
        hits.bound[narrow] = _signature_bound(hits.m[narrow], hits.n[narrow], ours, theirs)
        return hits.take(np.flatnonzero(hits.bound >= hits.need(bar)))

    def _with_wide_bounds(self, probes: Sequence[_Encoded], pairs: _Hits) -> _Hits:
        """`pairs` with the wide signature bound applied where both texts are long."""
        wide = np.flatnonzero(_both_wide(pairs.m, pairs.n))
        if len(wide):
            ours = _rows(_wide_stack(probes), pairs.probe[wide])
            theirs = _rows(self._wide, self._wide_row[pairs.entry[wide]])
            tighter = _signature_bound(pairs.m[wide], pairs.n[wide], ours, theirs)
            pairs.bound[wide] = np.minimum(pairs.bound[wide], tighter)
        return pairs

    def _verify(
        self,
        enc: _Encoded,
        cands: Sequence[int],
        uppers: Sequence[float],
        bar: float,
        best: tuple[float, int],
    ) -> tuple[float, int]:
        """Compute the real score of candidates, best bound first; returns (score, index).

        The score uses rouge_score's own float operations (see `rouge_l_fmeasure`), inlined
        because this loop runs for every candidate.
        """
        threshold = self.threshold
        best_score, best_index = best
        bar = max(bar, best_score - _MARGIN)
        seq, m = enc.seq, enc.length
        seqs, lens = self._seqs, self._lens
        similarity = LCSseq.similarity
        for upper, i in sorted(zip(uppers, cands, strict=True), key=_by_bound):
            if upper < bar:
                break  # sorted: no later candidate can beat the best found either
            n = lens[i]
            lcs = similarity(seq, seqs[i], score_cutoff=math.ceil(bar * (m + n) / 2.0))
            self.comparisons += 1
            if not lcs:
                continue
            precision = lcs / m
            recall = lcs / n
            score = 2 * precision * recall / (precision + recall)
            if score > threshold and (
                score > best_score or (score == best_score and i < best_index)
            ):
                best_score, best_index = score, i
                bar = max(bar, score - _MARGIN)
        return best_score, best_index

    def _exact_match(self, enc: _Encoded) -> Match | None:
        # An identical token sequence scores 1.0, the maximum: nothing can beat it.
        exact = self._exact.get(enc.seq)
        if exact is not None and self.threshold < 1.0:
            return Match(exact, self._texts[exact], 1.0)
        return None

    def _best(self, enc: _Encoded) -> Match | None:
        """The highest-scoring entry above the threshold (earliest on ties), or None."""
        score, index = self._pool_best([enc])[0]
        return None if index < 0 else Match(index, self._texts[index], score)

    def _bars(self) -> tuple[float, ...]:
        # A search at a high bar finds every entry scoring above it, so when it finds a match,
        # that match is the best; otherwise search again at the threshold itself.
        if self._t < _CASCADE and self._cascade_share >= _CASCADE_WORTH:
            return (_CASCADE, self._t)
        return (self._t,)

    def find_duplicate(self, text: str, tokens: list[str] | None = None) -> Match | None:
        """The most similar entry whose score is above the threshold, or None if `text` is novel.

        `tokens`: the text's tokens, when the caller has them already (saves tokenizing twice).
        """
        return self._best(self._encode(text, tokens))

    def is_novel(self, text: str) -> bool:
        return self.find_duplicate(text) is None

    def add(self, text: str, tokens: list[str] | None = None) -> int:
        """Add `text` to the pool unconditionally; returns its index."""
        return self._add(text, self._encode(text, tokens))

    def add_if_novel(self, text: str, tokens: list[str] | None = None) -> Match | None:
        """Add `text` if it is novel and return None; otherwise return the match that blocked it."""
        enc = self._encode(text, tokens)
        match = self._best(enc)
        if match is None:
            self._add(text, enc)
        return match

    @classmethod
    def for_pool(
        cls,
        threshold: float,
        tokenizer: TokenizerName,
        token_frequencies: Mapping[str, int] | None,
        pool: Iterable[str],
    ) -> RougeLIndex:
        """An index holding `pool`, paired with `WorkerEncoder(tokenizer, frequencies, pool)`
        made from the same arguments in another process."""
        index = cls(threshold, tokenizer, token_frequencies)
        for text in pool:
            index.add(text)
        return index

    def add_if_novel_encoded(self, texts: Sequence[str], batch: EncodedBatch) -> list[Match | None]:
        """`add_if_novel_many` for texts a paired `WorkerEncoder` encoded (see there)."""
        if len(self.encoder) != batch.vocabulary_before:
            raise RuntimeError(
                f"the worker's encoder knew {batch.vocabulary_before} tokens and the index's "
                f"{len(self.encoder)}: they were not built from the same pool, or the index "
                "encoded other texts meanwhile"
            )
        self.encoder.extend(batch.new_tokens)
        return self.add_if_novel_many(texts, encoded=batch.sequences)

    def add_if_novel_many(
        self,
        texts: Sequence[str],
        tokens: Sequence[list[str]] | None = None,
        *,
        encoded: Sequence[str | tuple[int, ...]] | None = None,
        probe_batch: int = 64,
    ) -> list[Match | None]:
        """`add_if_novel` for each text in order, with the same decisions, but faster.

        Candidates from the pool are found for a whole batch in one vectorised pass. Pairs
        within the batch are bounded all at once too, and each row is then checked against the
        rows of its batch kept before it, so every row is still compared with the pool and with
        every kept row before it. `encoded`: sequences made by an encoder kept identical to
        `self.encoder` (see `TokenEncoder`), instead of tokens.
        """
        results: list[Match | None] = []
        for start in range(0, len(texts), probe_batch):
            chunk = texts[start : start + probe_batch]
            chunk_tokens = tokens[start : start + probe_batch] if tokens is not None else None
            chunk_encoded = encoded[start : start + probe_batch] if encoded is not None else None
            encs = self._encode_many(chunk, chunk_tokens, chunk_encoded)
            pool_best = self._pool_best(encs)
            earlier = self._batch_candidates(encs)
            first = len(self._texts)
            kept: list[_Encoded] = []
            kept_as = [-1] * len(encs)  # batch row -> its index in the pool, once kept
            for k, (text, enc, best) in enumerate(zip(chunk, encs, pool_best, strict=True)):
                cands = [(kept_as[row], upper) for row, upper in earlier[k] if kept_as[row] >= 0]
                if cands:
                    indices, uppers = zip(*cands, strict=True)
                    best = self._verify(enc, indices, uppers, self._t, best)
                if best[1] >= 0:
                    results.append(Match(best[1], self._texts[best[1]], best[0]))
                    continue
                kept_as[k] = self._append(text, enc)
                kept.append(enc)
                results.append(None)
            self._index_entries(first, kept)
        return results

    def _batch_candidates(self, encs: Sequence[_Encoded]) -> list[list[tuple[int, float]]]:
        """Per batch row, the earlier rows that may score above the threshold with it, each
        with an upper bound on the score: all pairs of the batch at once, bounded by length and
        signatures (a batch is small, so no prefix filter is needed)."""
        size = len(encs)
        found: list[list[tuple[int, float]]] = [[] for _ in encs]
        if size < 2:
            return found
        early, late = np.triu_indices(size, 1)
        lengths = np.asarray([e.length for e in encs], dtype=np.int64)
        m, n = lengths[late], lengths[early]
        if self.prune:
            wide = _both_wide(m, n)
            stack = np.stack([e.narrow for e in encs])
            bound = _signature_bound(m, n, _rows(stack, late), _rows(stack, early))
            if wide.any():
                stack = _wide_stack(encs)
                ours, theirs = _rows(stack, late[wide]), _rows(stack, early[wide])
                bound[wide] = _signature_bound(m[wide], n[wide], ours, theirs)
            keep = np.flatnonzero((bound > 0) & (bound >= np.ceil(self._t * (m + n) / 2.0)))
            upper = (2.0 * bound[keep] / (m[keep] + n[keep])).tolist()
        else:
            keep = np.flatnonzero((m > 0) & (n > 0))
            upper = [1.0] * len(keep)
        for row, other, up in zip(late[keep].tolist(), early[keep].tolist(), upper, strict=True):
            found[row].append((other, up))
        return found

    def _pool_best(self, encs: list[_Encoded]) -> list[tuple[float, int]]:
        """For each probe, its best match in the pool as it is now: (score, index) or (-1, -1)."""
        best: list[tuple[float, int]] = [(-1.0, -1)] * len(encs)
        todo = []
        for k, enc in enumerate(encs):
            if enc.length == 0 or not self._texts:
                continue  # rouge_score gives 0 against everything
            exact = self._exact_match(enc)
            if exact is not None:
                best[k] = (exact.score, exact.index)
            else:
                todo.append(k)
        if not self.prune:
            everything = range(len(self._texts))
            for k in todo:
                best[k] = self._verify(
                    encs[k], everything, [1.0] * len(everything), self._t, best[k]
                )
            return best
        searched = todo
        for bar in self._bars():
            if not todo:
                break
            probes = [encs[k] for k in todo]
            probe_of, probe_pos, hit_lists = self._lookup(probes, bar)
            if not hit_lists:
                continue  # nothing above this bar; a lower bar reads a longer prefix
            for p, cands, uppers in self._bounded(probes, probe_of, probe_pos, hit_lists, bar):
                k = todo[p]
                best[k] = self._verify(encs[k], cands, uppers, bar, best[k])
            todo = [k for k in todo if best[k][1] < 0]
        if searched:
            high = sum(best[k][0] >= _CASCADE for k in searched) / len(searched)
            self._cascade_share = (
                _CASCADE_MEMORY * self._cascade_share + (1 - _CASCADE_MEMORY) * high
            )
        return best

    def _add(self, text: str, enc: _Encoded) -> int:
        index = self._append(text, enc)
        self._index_entries(index, [enc])
        return index

    def _append(self, text: str, enc: _Encoded) -> int:
        """Give `text` the next index; until `_index_entries` runs, only `_verify` sees it."""
        index = len(self._texts)
        self._texts.append(text)
        self._seqs.append(enc.seq)
        self._lens.append(enc.length)
        self._exact.setdefault(enc.seq, index)
        return index

    def _index_entries(self, first: int, encs: Sequence[_Encoded]) -> None:
        """Make appended entries first, first + 1, ... searchable: arrays and postings."""
        if not encs:
            return
        end = first + len(encs)
        while end > len(self._lens_np):
            self._lens_np = _grown(self._lens_np, first)
            self._narrow = _grown(self._narrow, first)
            self._wide_row = _grown(self._wide_row, first)
        lengths = np.asarray([e.length for e in encs], dtype=np.int64)
        self._lens_np[first:end] = lengths
        self._narrow[first:end] = np.stack([e.narrow for e in encs])
        for index, enc in enumerate(encs, start=first):
            if enc.wide is not None:
                if self._n_wide >= len(self._wide):
                    self._wide = _grown(self._wide, self._n_wide)
                self._wide[self._n_wide] = enc.wide
                self._wide_row[index] = self._n_wide
                self._n_wide += 1
        counts = np.asarray([len(e.elements) for e in encs], dtype=np.int64)
        buckets = _buckets(lengths)
        self._top_bucket = max(self._top_bucket, int(buckets.max()))
        starts = np.cumsum(counts) - counts
        position = np.arange(counts.sum()) - np.repeat(starts, counts)
        keys = (np.concatenate([e.elements for e in encs]) << _BUCKET_BITS) | np.repeat(
            buckets, counts
        )
        values = (np.repeat(np.arange(first, end), counts) << _POS_BITS) | position
        postings = self._postings
        for key, value in zip(keys.tolist(), values.tolist(), strict=True):
            hits = postings.get(key)
            if hits is None:
                postings[key] = array("q", (value,))
            else:
                hits.append(value)

    def scores(self, text: str, workers: int = 1) -> np.ndarray:
        """Exhaustive ROUGE-L F-measure of `text` against every entry (no pruning)."""
        # Only the symbol sequence: the prefixes and signatures `_encode` also makes serve the
        # pruned search alone, and cost more than this LCS against a pool of a few hundred.
        encoded = self.encoder.encode(self._tokenize(text))
        self._sync_symbol_kind()
        seq = encoded if self._codepoints else as_ids(encoded)
        if not self._texts:
            return np.zeros(0)
        lcs = process.cdist(
            [seq], self._seqs, scorer=LCSseq.similarity, dtype=np.float64, workers=workers
        )[0]
        lens = self._lens_np[: len(self._texts)]
        return _fmeasure_rows(lcs[None], lens, np.asarray([len(seq)]))[0]

    def provenance(self, first: int, count: int, k: int = 10) -> Future[list[Provenance]]:
        """The provenance of entries first .. first + count - 1, each against the entries
        before it, computed in a background thread (the entries must already be added; later
        additions do not change the answer)."""
        if count <= 0:
            return no_provenance(0)
        # From the front only: provenance lags behind the loop (142 jobs waiting on average, 384
        # at most, at 512 in flight to 16,000 tasks), and a pass over them all at every list
        # took 4% of the loop's thread there (py-spy).
        while self._pending and self._pending[0].done():
            self._pending.popleft()
        job = _background().submit(self._provenance, first, count, k)
        self._pending.append(job)
        return job

    def cancel_provenance(self) -> None:
        """Drop the provenance jobs not started yet (a run that stops needs none of them, and
        the interpreter's exit would wait for them all)."""
        for job in self._pending:
            job.cancel()
        self._pending.clear()

    def _provenance(self, first: int, count: int, k: int) -> list[Provenance]:
        # Entries are only appended, and a grown array or a list converted to ids
        # (`_sync_symbol_kind`) is swapped in whole: each read here sees a consistent prefix.
        seqs, lens, texts = self._seqs, self._lens_np, self._texts
        stop = first + count
        if stop <= 1:  # nothing, or only the first entry, which has nothing before it
            return [Provenance({}, None)] * count
        workers = max(1, min(count, _cores() - 1))
        lcs = process.cdist(
            seqs[first:stop],
            seqs[: stop - 1],
            scorer=LCSseq.similarity,
            dtype=np.float64,
            workers=workers,
        )
        f = _fmeasure_rows(lcs, lens[: stop - 1], lens[first:stop])
        out = []
        for row, entry in enumerate(range(first, stop)):
            if entry == 0:
                out.append(Provenance({}, None))
                continue
            scores = f[row, :entry]
            top = top_indices(scores, k)
            out.append(Provenance({texts[i]: float(scores[i]) for i in top}, float(scores.mean())))
        return out

    def most_similar(self, text: str, k: int = 10, workers: int = 1) -> list[Match]:
        """The k entries most similar to `text`, by exhaustive comparison (highest first)."""
        return self.top_matches(self.scores(text, workers=workers), k)

    def top_matches(self, scores: np.ndarray, k: int = 10) -> list[Match]:
        """The k highest of `scores` (from `scores()`), earliest entry first on ties."""
        if k <= 0 or len(scores) == 0:
            return []
        top = top_indices(scores, k)
        return [Match(int(i), self._texts[i], float(scores[i])) for i in top]
