"""Summaries of latency samples (seconds): the median/p99/max that benchmarks, status and reports print."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LatencySummary:
    """Statistics of ``count`` samples, all in seconds (NaN when there are none)."""

    count: int
    mean: float
    median: float
    p99: float
    max: float

    def as_ms(self) -> dict[str, float | int]:
        """``{"median_ms", "p99_ms", "max_ms", "mean_ms", "reps"}`` rounded to microseconds."""
        return {
            "median_ms": round(self.median * 1e3, 3),
            "p99_ms": round(self.p99 * 1e3, 3),
            "max_ms": round(self.max * 1e3, 3),
            "mean_ms": round(self.mean * 1e3, 3),
            "reps": self.count,
        }


def summarize(samples: Sequence[float]) -> LatencySummary:
    a = np.asarray(samples, dtype=np.float64)
    if a.size == 0:
        nan = float("nan")
        return LatencySummary(0, nan, nan, nan, nan)
    return LatencySummary(
        int(a.size), float(a.mean()), float(np.median(a)), float(np.percentile(a, 99)), float(a.max())
    )


def ratio(baseline: Sequence[float], candidate: Sequence[float]) -> float:
    """Speed-up of ``candidate`` over ``baseline``: median(baseline) / median(candidate)."""
    return round(float(np.median(baseline) / np.median(candidate)), 4)
