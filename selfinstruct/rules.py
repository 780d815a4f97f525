"""Rule filters for instructions (stage 2): small predicates -> reason. Used by `generate`'s
instruction stage and by `selfinstruct filter`. (The instance filters belong to the instance
stage: `stages/instances.py`.)

Instruction rules are the paper's (Self-Instruct's `bootstrap_instructions.py`, with Alpaca's
extra keywords): keep 4..150 words, drop instructions naming things a text model cannot see or
make (image, graph, file, map, video, ...), drop those starting with "Write a program" (in any
letter case, as the paper's check on capitalised text did), with punctuation, or with a
non-ASCII character. Every rule can be switched off or replaced.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from typing import Any

from selfinstruct.config import PAPER_KEYWORDS, RuleConfig

__all__ = ["PAPER_KEYWORDS", "RuleConfig", "RuleFilter", "RuleHit"]


@dataclass(frozen=True, slots=True)
class RuleHit:
    reason: str
    detail: dict[str, Any]


class RuleFilter:
    """Applies a `RuleConfig`; `check(text)` returns the first rule that drops it, or None."""

    def __init__(self, config: RuleConfig | None = None) -> None:
        self.config = config or RuleConfig()
        words = sorted(self.config.keywords, key=len, reverse=True)
        # One alternation, same decisions as the paper's per-word r"\b(word)\b" search.
        self._keyword_re = (
            re.compile(r"\b(" + "|".join(re.escape(w) for w in words) + r")\b", re.IGNORECASE)
            if words
            else None
        )

    def check(self, text: str) -> RuleHit | None:
        cfg = self.config
        stripped = text.strip()
        if not stripped:
            return RuleHit("empty", {})
        n_words = len(stripped.split())
        if cfg.min_words is not None and n_words < cfg.min_words:
            return RuleHit("too_short", {"words": n_words, "min_words": cfg.min_words})
        if cfg.max_words is not None and n_words > cfg.max_words:
            return RuleHit("too_long", {"words": n_words, "max_words": cfg.max_words})
        if self._keyword_re is not None:
            found = self._keyword_re.search(stripped)
            if found:
                return RuleHit("keyword", {"keyword": found.group(1).lower()})
        lowered = stripped.lower()
        for prefix in cfg.banned_prefixes:
            if lowered.startswith(prefix.lower()):
                return RuleHit("banned_prefix", {"prefix": prefix})
        first = stripped[0]
        if cfg.drop_punctuation_start and first in string.punctuation:
            return RuleHit("punctuation_start", {"char": first})
        if cfg.drop_non_ascii_start and not first.isascii():
            return RuleHit("non_ascii_start", {"char": first})
        return None
