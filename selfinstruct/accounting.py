"""What a request was and what it cost: the prompt hash a journal keeps, and the price of tokens.

Every journal (generate's requests, the audit's verdicts) names a prompt by `prompt_sha`, so a
resumed run can tell that it is about to ask the same question; every cost estimate comes from
`cost_usd`: the user's price table (`prices` in a config file: model -> USD per million prompt and
completion tokens), else the dated table of hosted models in `pricing.py`.
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
    from selfinstruct.pricing import price_for

    price = price_for(prices, model)
    return None if price is None else price.cost(prompt_tokens, completion_tokens)
