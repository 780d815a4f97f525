"""Tokenizers for ROUGE-L, and the vocabulary that turns tokens into compact sequences.

`rouge` is rouge_score's own tokenizer (the paper's, English only); `unicode` keeps letters,
marks and digits of every script and splits CJK per character. `TokenEncoder` gives each distinct
token one code point, so a text becomes a short `str` that rapidfuzz's LCS runs on directly, and a
frozen rarest-first order key that the ROUGE-L index sorts prefixes by.
"""

from __future__ import annotations

import functools
import re
import sys
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Literal

import numpy as np

TokenizerName = Literal["rouge", "unicode"]

_ROUGE_TOKEN = re.compile(r"[a-z0-9]+")


def rouge_tokenize(text: str) -> list[str]:
    """rouge_score's default tokenizer: lowercase, keep runs of [a-z0-9], drop everything else.

    Equal to `rouge_score.tokenize.tokenize(text, None)`: that code replaces non-[a-z0-9] runs
    with spaces, splits on whitespace and drops empty tokens, which leaves exactly these runs.
    """
    return _ROUGE_TOKEN.findall(text.lower())


# Scripts written without spaces between words: one token per character, as CJK ROUGE does.
_CJK = re.compile(
    "[\u2e80-\u2fdf\u3040-\u30ff\u3100-\u312f\u31a0-\u31ff\u3400-\u4dbf\u4e00-\u9fff"
    "\uf900-\ufaff\U00020000-\U0003134f]"
)


@functools.cache
def _unicode_word_re() -> re.Pattern[str]:
    # `\w` misses combining marks (Devanagari vowel signs, Arabic harakat...), which would cut
    # words in half; add every mark code point to the class. Built once, on first use.
    ranges: list[tuple[int, int]] = []
    for cp in range(sys.maxunicode + 1):
        if unicodedata.category(chr(cp)).startswith("M"):
            if ranges and ranges[-1][1] == cp - 1:
                ranges[-1] = (ranges[-1][0], cp)
            else:
                ranges.append((cp, cp))
    marks = "".join(f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in ranges)
    return re.compile(f"(?:[^\\W_]|[{marks}])+")


def unicode_tokenize(text: str) -> list[str]:
    """Letters, marks and digits of every script, case-folded; CJK split into characters."""
    spaced = _CJK.sub(lambda m: f" {m.group()} ", text.casefold())
    return _unicode_word_re().findall(spaced)


TOKENIZERS: dict[str, Callable[[str], list[str]]] = {
    "rouge": rouge_tokenize,
    "unicode": unicode_tokenize,
}


# Order keys pack (document frequency, token id); the id takes the low bits.
ID_BITS = 24
ID_MASK = (1 << ID_BITS) - 1
# Code points available to tokens: all of Unicode but the surrogate block.
MAX_CODEPOINT_TOKENS = 0x110000 - 0x800


class TokenEncoder:
    """Token -> symbol map in first-seen order, with a frozen rarest-first order per token.

    A symbol is one code point while the vocabulary fits in Unicode (the fast path: sequences are
    `str`), and an int past that (sequences become tuples). Two encoders fed the same tokens in
    the same order assign the same symbols, which lets a worker process encode rows for an index
    that lives in another process: it only has to send the tokens it saw first (`tokens_from`).
    `frequencies` is copied and never updated, so the order stays valid as tokens arrive;
    unseen tokens get frequency 0 and sort first, as the rarest.
    """

    def __init__(self, frequencies: Mapping[str, int] | None = None) -> None:
        self.frequencies = dict(frequencies or {})
        self.tokens: list[str] = []
        self.order_keys = np.zeros(1024, dtype=np.int64)  # token id -> frequency << ID_BITS | id
        self._symbols: dict[str, str | int] = {}
        self.codepoints = True
        self.codepoint_limit = MAX_CODEPOINT_TOKENS

    def __len__(self) -> int:
        return len(self.tokens)

    def _add(self, token: str) -> None:
        tid = len(self.tokens)
        if tid > ID_MASK:
            raise ValueError(f"more than {ID_MASK} distinct tokens; filter the file in parts")
        if self.codepoints and tid >= self.codepoint_limit:
            # Out of code points: every symbol becomes its int id from now on.
            self.codepoints = False
            self._symbols = {tok: i for i, tok in enumerate(self.tokens)}
        self.tokens.append(token)
        self._symbols[token] = chr(tid if tid < 0xD800 else tid + 0x800) if self.codepoints else tid
        if tid >= len(self.order_keys):
            self.order_keys = np.concatenate([self.order_keys, np.zeros_like(self.order_keys)])
        self.order_keys[tid] = (self.frequencies.get(token, 0) << ID_BITS) | tid

    def extend(self, tokens: Iterable[str]) -> None:
        """Add tokens (new ones, in the order another encoder first saw them)."""
        for token in tokens:
            if token not in self._symbols:
                self._add(token)

    def tokens_from(self, start: int) -> list[str]:
        """The tokens first seen since the vocabulary had `start` entries."""
        return self.tokens[start:]

    def encode(self, tokens: list[str]) -> str | tuple[int, ...]:
        """One symbol per token: a `str` of code points, or a tuple of ids past that range."""
        symbols = self._symbols
        try:
            syms = list(map(symbols.__getitem__, tokens))
        except KeyError:
            self.extend(tokens)
            syms = list(map(self._symbols.__getitem__, tokens))
        if self.codepoints:
            return "".join(syms)  # type: ignore[arg-type]
        return tuple(syms)  # type: ignore[arg-type]


def symbol_ids(seqs: Sequence[str | tuple[int, ...]]) -> np.ndarray:
    """The token ids of many encoded sequences, concatenated (int64)."""
    if seqs and all(isinstance(seq, str) for seq in seqs):
        joined = "".join(seqs)  # type: ignore[arg-type]
        ids = np.frombuffer(joined.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
        ids -= (ids >= 0xE000) * 0x800  # undo the jump over the surrogate block
        return ids
    return np.fromiter(
        (i for seq in seqs for i in (as_ids(seq) if isinstance(seq, str) else seq)), np.int64
    )


def as_ids(seq: str | tuple[int, ...]) -> tuple[int, ...]:
    """A code-point sequence as a tuple of token ids (for when the vocabulary outgrows Unicode)."""
    if isinstance(seq, tuple):
        return seq
    return tuple(cp if cp < 0xD800 else cp - 0x800 for cp in map(ord, seq))


def document_frequencies(texts: Iterable[str], tokenizer: TokenizerName) -> Counter[str]:
    """How many texts contain each token: the rarest-first order for `TokenEncoder`."""
    tokenize = TOKENIZERS[tokenizer]
    freq: Counter[str] = Counter()
    for text in texts:
        freq.update(set(tokenize(text)))
    return freq
