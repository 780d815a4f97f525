"""What a request was and what it cost: the prompt hash a journal keeps, and the price of tokens.

Every journal (generate's requests, the audit's verdicts) names a prompt by `prompt_sha`, so a
resumed run can tell that it is about to ask the same question; every cost estimate comes from
`cost_usd` and a price table (`prices` in a config file: model -> USD per million prompt and
completion tokens).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

from selfinstruct.backends.base import Prompt


def prompt_sha(prompt: Prompt) -> str:
    """A short, stable hash of a prompt (text, or chat messages)."""
    text = prompt if isinstance(prompt, str) else json.dumps(prompt, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def cost_usd(
    prices: Mapping[str, tuple[float, float]],
    model: str,
    prompt_tokens: int,
    completion_tokens: int,
) -> float | None:
    """Estimated cost of the tokens at `model`'s price, or None when it has none."""
    price = prices.get(model)
    if price is None:
        return None
    return (prompt_tokens * price[0] + completion_tokens * price[1]) / 1e6
