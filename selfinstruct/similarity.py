"""Exact ROUGE-L novelty filtering that never compares most pairs.

Decisions are bit-for-bit those of `rouge_score.rouge_scorer.RougeScorer(["rougeL"])` F-measure
(no stemmer): the same tokenizer, the same LCS, and the same float operations for the score, so a
pair that lands exactly on the threshold is decided the same way. Speed comes from two places:

1. Pruning. ROUGE-L F1 is 2·LCS/(m+n) and LCS ≤ the multiset token overlap ≤ min(m, n). A pair
   can only score above t if the lengths are close (length filter) and the two token multisets
   share at least ⌈t·m/(2-t)⌉ tokens, which implies that their *prefixes* under one global token
   order (rarest first) intersect (prefix filtering, as in AllPairs/PPJoin). Only candidates
   found through prefix postings are compared. The bounds use a threshold a hair below the real
   one, so float rounding can make them looser, never wrong.
2. rapidfuzz's bit-parallel C++ LCS on token-id strings (each token becomes one code point).

The index is incremental (add / find_duplicate / is_novel) because `generate` grows its pool
inside the loop; `filter` uses it in one sequential pass.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from rapidfuzz import process
from rapidfuzz.distance import LCSseq

from selfinstruct.tokens import (
    ID_BITS,
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


def _fmeasure_array(lcs: np.ndarray, target_lens: np.ndarray, prediction_len: int) -> np.ndarray:
    # numpy's float64 +, *, / are IEEE-exact like Python's, so this equals rouge_l_fmeasure.
    if prediction_len == 0:
        return np.zeros(len(lcs))
    precision = lcs / prediction_len
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = lcs / target_lens
        f = 2 * precision * recall / (precision + recall)
    return np.where((precision + recall > 0) & (target_lens > 0), f, 0.0)


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


# Pruning uses a threshold this far below the real one: far larger than any float error in the
# bounds, far smaller than any gap between two distinct ROUGE-L values of real text.
_MARGIN = 1e-9
# A token occurrence (an "element") is (k-th occurrence << ID_BITS | token id).
# A posting is (entry index, position of the element in the entry's order), packed likewise.
_POS_BITS = 32
_POS_MASK = (1 << _POS_BITS) - 1
# Postings are keyed by element and the entry's length bucket (see _bucket).
_NO_ELEMENTS = np.zeros(0, dtype=np.int64)
_BUCKET_BITS = 7
# Searches run first at this bar, whose prefix is much shorter: most near-duplicates score above
# it, and once one is found nothing below its score matters. Only if none is found does the
# search run again at the real threshold.
_CASCADE = (0.9,)
# Below this many postings a plain loop beats numpy's fixed cost per call.
_SMALL = 160


def _bucket(length: int) -> int:
    """Length bucket: the bit length (one octave per bucket)."""
    return max(length, 0).bit_length()


def _buckets(lengths: np.ndarray) -> np.ndarray:
    """`_bucket` for an array of lengths."""
    safe = np.maximum(lengths, 1)
    return np.where(lengths < 1, 0, np.floor(np.log2(safe)).astype(np.int64) + 1)


def _by_bound(pair: tuple[float, int]) -> tuple[float, int]:
    return -pair[0], pair[1]


def _min_overlap(t: float, length: int) -> int:
    # Any pair scoring above t shares at least ceil(t·m/(2-t)) token occurrences.
    return max(1, math.ceil(t * length / (2.0 - t)))


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
        threshold: float = 0.7,
        tokenizer: TokenizerName = "rouge",
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
        self._texts: list[str] = []
        self._seqs: list[str | tuple[int, ...]] = []
        self._lens: list[int] = []
        self._lens_np = np.zeros(0, dtype=np.int64)  # capacity-doubled copy of _lens
        # (element << _BUCKET_BITS | length bucket) -> [entry << _POS_BITS | position in entry]
        self._postings: dict[int, array[int]] = {}
        self._top_bucket = 0  # the largest length bucket any entry is in
        self._exact: dict[str | tuple[int, ...], int] = {}
        self._codepoints = True

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
        limits = [max(0, m - _min_overlap(self._t, m) + 1) if m else 0 for m in lengths]
        # Sort each text's tokens rarest first: by text, then by the token's order key.
        row = np.repeat(np.arange(len(lengths)), counts)
        order = np.lexsort((self.encoder.order_keys[ids], row))
        ids = ids[order]
        positions = np.arange(len(ids))
        run_start = np.ones(len(ids), dtype=bool)
        if len(ids) > 1:
            run_start[1:] = (ids[1:] != ids[:-1]) | (row[1:] != row[:-1])
        occurrence = positions - np.maximum.accumulate(np.where(run_start, positions, 0))
        elements = (occurrence << ID_BITS) | ids
        starts = np.cumsum(counts) - counts
        return [
            _Encoded(seq, elements[start : start + limit], m)
            for seq, start, limit, m in zip(seqs, starts.tolist(), limits, lengths, strict=True)
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
        prefixes = [max(0, e.length - _min_overlap(bar, e.length) + 1) for e in encs]
        total = sum(prefixes)
        if total == 0 or not self._postings:
            return _NO_ELEMENTS, _NO_ELEMENTS, []
        counts = np.asarray(prefixes, dtype=np.int64)
        elements = np.concatenate([e.elements[:p] for e, p in zip(encs, prefixes, strict=True)])
        probe = np.repeat(np.arange(len(encs)), counts)
        starts = np.cumsum(counts) - counts
        pos = np.arange(total) - np.repeat(starts, counts)
        m = np.asarray([e.length for e in encs], dtype=np.int64)[probe]
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
        where = [k for k, hits in enumerate(found) if hits]
        if not where:
            return _NO_ELEMENTS, _NO_ELEMENTS, []
        hit_owner = owner[where]
        return probe[hit_owner], pos[hit_owner], [found[k] for k in where]

    def _side_candidates(
        self, enc: _Encoded, side: dict[int, list[int]], bar: float
    ) -> tuple[list[int], list[float]]:
        """`_bounded` for the few rows kept earlier in the current batch, in plain Python."""
        m = enc.length
        prefix = max(0, m - _min_overlap(bar, m) + 1)
        lens = self._lens
        stats: dict[int, list[int]] = {}  # entry -> [shared, last probe pos, last entry pos]
        for i, hits in enumerate(map(side.get, enc.elements[:prefix].tolist())):
            if not hits:
                continue
            for packed in hits:
                entry = packed >> _POS_BITS
                st = stats.get(entry)
                if st is None:
                    stats[entry] = [1, i, packed & _POS_MASK]
                else:
                    st[0] += 1
                    st[1] = i
                    st[2] = packed & _POS_MASK
        cands, uppers = [], []
        for entry, (shared, i, j) in stats.items():
            n = lens[entry]
            bound = shared + min(m - 1 - i, n - 1 - j)
            if bound > 0 and bound >= math.ceil(bar * (m + n) / 2.0):
                cands.append(entry)
                uppers.append(2.0 * bound / (m + n))
        return cands, uppers

    def _bounded(
        self,
        lengths: list[int],
        probe_of: np.ndarray,
        probe_pos: np.ndarray,
        hit_lists: list[array[int]],
        bar: float,
    ) -> list[tuple[list[int], list[float]]]:
        """Candidates that may score above `bar`, each with an upper bound on its score.

        Every entry in the looked-up postings shares a prefix element with its probe. The number
        of shared prefix elements plus what could still match after the last shared one
        (PPJoin's positional bound) caps the multiset overlap, hence the LCS, hence the score.
        Hit list k belongs to probe probe_of[k], at probe position probe_pos[k].
        """
        counts = np.fromiter(map(len, hit_lists), np.int64, len(hit_lists))
        packed = np.frombuffer(b"".join(hit_lists), dtype=np.int64)
        key = (np.repeat(probe_of, counts) << _POS_BITS) | (packed >> _POS_BITS)
        order = np.argsort(key, kind="stable")  # stable: keeps probe order within a pair
        key = key[order]
        is_last = np.empty(len(key), dtype=bool)
        np.not_equal(key[1:], key[:-1], out=is_last[:-1])
        is_last[-1] = True
        last = np.flatnonzero(is_last)
        shared = last.copy()
        shared[1:] -= last[:-1]
        shared[0] += 1
        last_order = order[last]
        cand = key[last] & _POS_MASK
        probe = key[last] >> _POS_BITS
        i_last = np.repeat(probe_pos, counts)[last_order]
        j_last = packed[last_order] & _POS_MASK
        m = np.asarray(lengths, dtype=np.int64)[probe]
        n = self._lens_np[cand]
        bound = shared + np.minimum(m - 1 - i_last, n - 1 - j_last)
        keep = (bound >= np.ceil(bar * (m + n) / 2.0)) & (bound > 0)
        upper = (2.0 * bound[keep] / (m[keep] + n[keep])).tolist()
        cand_list, probe = cand[keep].tolist(), probe[keep]
        cuts = np.searchsorted(probe, np.arange(len(lengths) + 1)).tolist()
        return [
            (cand_list[cuts[k] : cuts[k + 1]], upper[cuts[k] : cuts[k + 1]])
            for k in range(len(lengths))
        ]

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
        return (*(bar for bar in _CASCADE if bar > self._t), self._t)

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

    def add_if_novel_many(
        self,
        texts: Sequence[str],
        tokens: Sequence[list[str]] | None = None,
        *,
        encoded: Sequence[str | tuple[int, ...]] | None = None,
        batch_size: int = 64,
    ) -> list[Match | None]:
        """`add_if_novel` for each text in order, with the same decisions, but faster.

        Candidates from the pool are found for a whole batch in one vectorised pass; rows kept
        earlier in the same batch are checked through a small side index, so every row is still
        compared with the pool and with every kept row before it. `encoded`: sequences made
        by an encoder kept identical to `self.encoder` (see `TokenEncoder`), instead of tokens.
        """
        results: list[Match | None] = []
        for start in range(0, len(texts), batch_size):
            chunk = texts[start : start + batch_size]
            chunk_tokens = tokens[start : start + batch_size] if tokens is not None else None
            chunk_encoded = encoded[start : start + batch_size] if encoded is not None else None
            encs = self._encode_many(chunk, chunk_tokens, chunk_encoded)
            pool_best = self._pool_best(encs)
            side: dict[int, list[int]] = {}  # element -> postings of rows kept in this batch
            for text, enc, best in zip(chunk, encs, pool_best, strict=True):
                if side and enc.length:
                    exact = self._exact_match(enc)
                    if exact is not None:
                        best = (exact.score, exact.index)
                    else:
                        cands, uppers = self._side_candidates(enc, side, self._t)
                        if cands:
                            best = self._verify(enc, cands, uppers, self._t, best)
                if best[1] >= 0:
                    results.append(Match(best[1], self._texts[best[1]], best[0]))
                    continue
                index = self._add(text, enc)
                base = index << _POS_BITS
                for j, element in enumerate(enc.elements.tolist()):
                    side.setdefault(element, []).append(base | j)
                results.append(None)
        return results

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
        for bar in self._bars():
            if not todo:
                break
            probes = [encs[k] for k in todo]
            probe_of, probe_pos, hit_lists = self._lookup(probes, bar)
            if not hit_lists:
                continue  # nothing above this bar; a lower bar reads a longer prefix
            per_probe = self._bounded(
                [e.length for e in probes], probe_of, probe_pos, hit_lists, bar
            )
            unresolved = []
            for k, (cands, uppers) in zip(todo, per_probe, strict=True):
                if cands:
                    best[k] = self._verify(encs[k], cands, uppers, bar, best[k])
                if best[k][1] < 0:
                    unresolved.append(k)
            todo = unresolved
        return best

    def _add(self, text: str, enc: _Encoded) -> int:
        index = len(self._texts)
        self._texts.append(text)
        self._seqs.append(enc.seq)
        self._lens.append(enc.length)
        if index >= len(self._lens_np):
            grown = np.zeros(max(1024, 2 * len(self._lens_np)), dtype=np.int64)
            grown[: len(self._lens_np)] = self._lens_np
            self._lens_np = grown
        self._lens_np[index] = enc.length
        self._exact.setdefault(enc.seq, index)
        bucket = _bucket(enc.length)
        self._top_bucket = max(self._top_bucket, bucket)
        base = index << _POS_BITS
        postings = self._postings
        for j, key in enumerate(((enc.elements << _BUCKET_BITS) | bucket).tolist()):
            hits = postings.get(key)
            if hits is None:
                postings[key] = array("q", (base | j,))
            else:
                hits.append(base | j)
        return index

    def scores(self, text: str, workers: int = 1) -> np.ndarray:
        """Exhaustive ROUGE-L F-measure of `text` against every entry (no pruning)."""
        enc = self._encode(text)
        if not self._texts:
            return np.zeros(0)
        lcs = process.cdist(
            [enc.seq], self._seqs, scorer=LCSseq.similarity, dtype=np.int64, workers=workers
        )[0]
        lens = self._lens_np[: len(self._texts)]
        return _fmeasure_array(lcs.astype(np.float64), lens, enc.length)

    def most_similar(self, text: str, k: int = 10, workers: int = 1) -> list[Match]:
        """The k entries most similar to `text`, by exhaustive comparison (highest first)."""
        return self.top_matches(self.scores(text, workers=workers), k)

    def top_matches(self, scores: np.ndarray, k: int = 10) -> list[Match]:
        """The k highest of `scores` (from `scores()`), earliest entry first on ties."""
        if k <= 0 or len(scores) == 0:
            return []
        top = np.argsort(-scores, kind="stable")[:k]
        return [Match(int(i), self._texts[i], float(scores[i])) for i in top]
