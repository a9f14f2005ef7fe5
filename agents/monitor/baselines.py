"""Robust statistics for the monitor's baselines: median and MAD (scaled to a standard
deviation), a robust z-score with a floor under the spread, and a binomial tail.

Why these: run times and costs are skewed and carry outliers, so a mean and standard
deviation learn from the very slow attempts they should flag; the median and the median
absolute deviation do not move for a few of them. A steady workload can have a MAD near
zero (identical tasks), so the spread is floored at a fraction of the median: without it
a 1 ms wobble would be "many deviations out".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import median

# MAD * this estimates the standard deviation of normally distributed data.
MAD_SCALE = 1.4826


@dataclass(frozen=True)
class Baseline:
    """What is usual: the median, the spread (scaled MAD) and how many samples say so."""

    median: float
    spread: float
    samples: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Baseline:
        if not values:
            return cls(0.0, 0.0, 0)
        mid = median(values)
        mad = median([abs(v - mid) for v in values])
        return cls(mid, mad * MAD_SCALE, len(values))

    @classmethod
    def from_mad(cls, mid: float | None, mad: float | None, samples: int) -> Baseline:
        """From a median and an unscaled MAD (as DuckDB's `median` and `mad` give them)."""
        return cls(mid or 0.0, (mad or 0.0) * MAD_SCALE, samples)

    def score(self, value: float, floor_fraction: float, floor_abs: float = 0.0) -> float:
        """How many spreads `value` is above the median; the spread is at least
        `floor_fraction` of the median and `floor_abs`."""
        spread = max(self.spread, abs(self.median) * floor_fraction, floor_abs, 1e-12)
        return (value - self.median) / spread


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p): how likely `k` failures of `n` are at rate `p`."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    p = min(max(p, 0.0), 1.0)
    if p == 0.0:
        return 0.0
    if p == 1.0:
        return 1.0
    return min(1.0, sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1)))


def surprise(probability: float) -> float:
    """-log10 of a probability: 6 means one in a million."""
    return -math.log10(max(probability, 1e-300))
