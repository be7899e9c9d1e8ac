"""Alternating rounds and the statistics every benchmark reports: median, percentiles, bootstrap CIs."""

from __future__ import annotations

import math
import os
import random
import statistics
from collections.abc import Callable

#: Fixed, so that the intervals of two runs with the same samples are the same.
BOOTSTRAP_SEED = 20261121


def alternating(rounds: int, arms: tuple[str, ...]) -> list[tuple[str, ...]]:
    """ABBA order: A B, B A, A B, ... (A B C, C B A, ... for three) so that no arm always goes first
    and a steady drift hits every arm alike."""
    return [arms if i % 2 == 0 else arms[::-1] for i in range(rounds)]


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank percentile (q in 0..1)."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered) - 1e-9) - 1))
    return ordered[index]


def stats(samples: list[float]) -> dict:
    """n, median, p99 and max of timings in milliseconds."""
    return {
        "n": len(samples),
        "median_ms": statistics.median(samples),
        "p99_ms": percentile(samples, 0.99),
        "max_ms": max(samples),
    }


def bootstrap_ci(
    statistic: Callable[..., float], *samples: list[float], resamples: int = 2000
) -> tuple[float, float]:
    """95% bootstrap interval of ``statistic(*samples)``: how far noise alone moves it."""
    rng = random.Random(BOOTSTRAP_SEED)
    values = sorted(statistic(*(rng.choices(s, k=len(s)) for s in samples)) for _ in range(resamples))
    return values[int(0.025 * resamples)], values[int(0.975 * resamples) - 1]


def ratio_ci(num: list[float], den: list[float]) -> tuple[float, float]:
    """95% bootstrap interval of median(num) / median(den)."""
    return bootstrap_ci(lambda a, b: statistics.median(a) / statistics.median(b), num, den)


def diff_ci(a: list[float], b: list[float], q: float) -> tuple[float, float]:
    """95% bootstrap interval of percentile(a, q) - percentile(b, q)."""
    return bootstrap_ci(lambda x, y: percentile(x, q) - percentile(y, q), a, b)


def median_diff(a: list[float], b: list[float]) -> float:
    return statistics.median(a) - statistics.median(b)


def added_ratio(more: list[float], one: list[float], base: list[float]) -> float:
    """(median(more) - median(base)) / (median(one) - median(base)): what ``more`` adds to the
    baseline, in units of what ``one`` adds (inf when ``one`` adds nothing)."""
    added_one = statistics.median(one) - statistics.median(base)
    added_more = statistics.median(more) - statistics.median(base)
    return added_more / added_one if added_one > 0 else math.inf


def load_average() -> str:
    """The 1-minute load average: how busy the (shared) machine was."""
    try:
        return f"{os.getloadavg()[0]:.1f}"
    except OSError:
        return "?"
