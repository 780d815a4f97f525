"""Rule filters: instructions (stage 2) and instances (stage 6), small predicates -> reason.

Instruction rules are the paper's (Self-Instruct's `bootstrap_instructions.py`, with Alpaca's
extra keywords): keep 4..150 words, drop instructions naming things a text model cannot see or
make (image, graph, file, map, video, ...), drop those starting with "Write a program" (in any
letter case, as the paper's check on capitalised text did), with punctuation, or with a
non-ASCII character. Every rule can be switched off or replaced.

Instance rules are the paper's `prepare_for_finetuning.py`: drop an instance with an empty
output, an input equal to its output, or an input or output that ends with ":" (a field header
with nothing after it: the model stopped before writing it); drop exact duplicates; drop the
whole task when one non-empty input has two different outputs; keep at most N per task.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field
from typing import Any

from selfinstruct.config import PAPER_KEYWORDS, RuleConfig
from selfinstruct.records import Instance

__all__ = ["PAPER_KEYWORDS", "InstanceVerdict", "RuleConfig", "RuleFilter", "filter_instances"]


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


# -- stage 6: instances --------------------------------------------------------------------


@dataclass
class InstanceVerdict:
    """What the instance filters kept, what they dropped (reason, instance), and, when the whole
    task goes, why."""

    kept: list[Instance] = field(default_factory=list)
    dropped: list[tuple[str, Instance]] = field(default_factory=list)
    task_reason: str | None = None


def instance_problem(inst: Instance) -> str | None:
    """Why one instance is unusable on its own, or None."""
    given, output = inst.input.strip(), inst.output.strip()
    if not output:
        return "empty_output"
    if given and given == output:
        return "input_is_output"
    if given.endswith(":") or output.endswith(":"):
        return "field_header_only"
    return None


def filter_instances(instances: list[Instance], cap: int) -> InstanceVerdict:
    """The paper's instance filters over one task's instances, in order."""
    verdict = InstanceVerdict()
    outputs_by_input: dict[str, set[str]] = {}
    seen: set[tuple[str, str]] = set()
    for inst in instances:
        problem = instance_problem(inst)
        key = (inst.input.strip(), inst.output.strip())
        if problem is None and key in seen:
            problem = "duplicate"
        if problem is not None:
            verdict.dropped.append((problem, inst))
            continue
        seen.add(key)
        outputs_by_input.setdefault(key[0], set()).add(key[1])
        verdict.kept.append(inst)
    if any(len(outs) > 1 for given, outs in outputs_by_input.items() if given):
        verdict.task_reason = "same_input_different_outputs"
    elif not verdict.kept:
        verdict.task_reason = "no_valid_instances"
    if verdict.task_reason is not None:
        verdict.kept = []
        return verdict
    verdict.dropped.extend(("over_cap", inst) for inst in verdict.kept[cap:])
    verdict.kept = verdict.kept[:cap]
    return verdict
