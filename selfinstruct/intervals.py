"""Confidence intervals for evaluation figures: the bootstrap over evaluation items.

Every figure `eval` reports is a ratio of per-item sums (a mean is `sum(x) / n`; the response loss
is `sum(loss per item) / sum(tokens per item)`), so one resampler serves them all. Differences
between two variants are *paired*: each resample draws the same items for both, which is what
makes a small gain on a few hundred items detectable when the items themselves vary a lot.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel

LEVEL = 0.95


class Interval(BaseModel):
    estimate: float
    low: float
    high: float

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def text(self, digits: int = 3) -> str:
        return f"{self.estimate:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def _arrays(num: Sequence[float], den: Sequence[float] | None) -> tuple[np.ndarray, np.ndarray]:
    top = np.asarray(num, dtype=float)
    bottom = np.ones_like(top) if den is None else np.asarray(den, dtype=float)
    if top.shape != bottom.shape or top.ndim != 1 or len(top) == 0:
        raise ValueError("numerators and denominators must be equally long, non-empty lists")
    return top, bottom


def _draws(n: int, samples: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(samples, n))


def _percentiles(values: np.ndarray) -> tuple[float, float]:
    tail = (1 - LEVEL) / 2 * 100
    low, high = np.nanpercentile(values, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap(
    num: Sequence[float],
    den: Sequence[float] | None = None,
    *,
    samples: int,
    resample_seed: int = 0,
) -> Interval:
    """sum(num) / sum(den) (the mean of `num` without `den`), with a percentile interval."""
    top, bottom = _arrays(num, den)
    idx = _draws(len(top), samples, resample_seed)
    with np.errstate(invalid="ignore", divide="ignore"):
        stats = top[idx].sum(axis=1) / bottom[idx].sum(axis=1)
    low, high = _percentiles(stats)
    return Interval(estimate=float(top.sum() / bottom.sum()), low=low, high=high)


def paired_difference(
    a: tuple[Sequence[float], Sequence[float] | None],
    b: tuple[Sequence[float], Sequence[float] | None],
    *,
    samples: int,
    resample_seed: int = 0,
) -> Interval:
    """B minus A on the same items, each given as (numerators, denominators or None)."""
    a_top, a_bottom = _arrays(*a)
    b_top, b_bottom = _arrays(*b)
    if len(a_top) != len(b_top):
        raise ValueError("a paired difference needs the same items on both sides")
    idx = _draws(len(a_top), samples, resample_seed)
    with np.errstate(invalid="ignore", divide="ignore"):
        diffs = b_top[idx].sum(axis=1) / b_bottom[idx].sum(axis=1) - a_top[idx].sum(
            axis=1
        ) / a_bottom[idx].sum(axis=1)
    low, high = _percentiles(diffs)
    estimate = b_top.sum() / b_bottom.sum() - a_top.sum() / a_bottom.sum()
    return Interval(estimate=float(estimate), low=low, high=high)
