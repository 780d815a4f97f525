"""What tokens cost: the user's price table first, then a small dated table of hosted models.

Prices are USD per million prompt and completion tokens. The built-in table is a convenience for
a first plan, not a bill: providers change prices, so every figure it gives is labelled with the
date it was read, and a `prices` entry in a config file (model -> [prompt, completion]) wins.
A model served by the user (vLLM, llama.cpp, the bundled one) has no token price.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel

# Listed prices of well-known hosted models, standard (not batch) tier, as read on this date.
TABLE_DATE = "2025-06"
KNOWN_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-3.5-turbo": (0.50, 1.50),
}


class Price(BaseModel):
    prompt: float  # USD per 1M prompt tokens
    completion: float  # USD per 1M completion tokens
    source: str  # "your price table" or "built-in table of <date>"

    def cost(self, prompt_tokens: float, completion_tokens: float) -> float:
        return (prompt_tokens * self.prompt + completion_tokens * self.completion) / 1e6


def price_for(prices: Mapping[str, tuple[float, float]], model: str | None) -> Price | None:
    """The price of `model`'s tokens: the user's table, else the built-in one (a dated model
    name such as gpt-4o-mini-2024-07-18 takes its family's price), else None."""
    if model is None:
        return None
    if model in prices:
        prompt, completion = prices[model]
        return Price(prompt=prompt, completion=completion, source="your price table")
    name = model.rsplit("/", 1)[-1]
    for known in sorted(KNOWN_PRICES, key=len, reverse=True):
        if name == known or name.startswith(known + "-2"):
            prompt, completion = KNOWN_PRICES[known]
            return Price(
                prompt=prompt, completion=completion, source=f"built-in table of {TABLE_DATE}"
            )
    return None
