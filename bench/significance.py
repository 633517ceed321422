"""Is a difference real? Bootstrap confidence intervals over requests and paired tests between methods
scored on the same requests (per-request values from bench.metrics.per_request_metrics).

Vectorised: one seeded (resamples x requests) matrix of multinomial counts serves every row and every
metric of a table, so a whole leaderboard builds in seconds.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

RESAMPLES = 1000
SEED = 0
ALPHA = 0.05
MIN_REQUESTS_FOR_TEST = 30  # the paired test uses the normal approximation to the t distribution


@lru_cache(maxsize=4)
def bootstrap_counts(requests: int, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """How often each request is drawn in each bootstrap resample: (resamples, requests) float32."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(requests, np.full(requests, 1.0 / requests), size=resamples).astype(np.float32)


def bootstrap_ci(values: np.ndarray, resamples: int = RESAMPLES, seed: int = SEED,
                 alpha: float = ALPHA) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval of the mean of each column of `values` (requests, metrics)."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 1:
        values = values[:, None]
    means = bootstrap_counts(values.shape[0], resamples, seed).astype(np.float64) @ values / values.shape[0]
    return np.quantile(means, alpha / 2, axis=0), np.quantile(means, 1 - alpha / 2, axis=0)


def paired_p_values(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Two-sided paired t-test per column of (requests, metrics) arrays scored on the same requests, with
    the normal approximation (fine from ~30 requests; fewer get NaN). No difference at all: p = 1."""
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if diff.ndim == 1:
        diff = diff[:, None]
    n = diff.shape[0]
    if n < MIN_REQUESTS_FOR_TEST:
        return np.full(diff.shape[1], np.nan)
    mean, sd = diff.mean(0), diff.std(0, ddof=1)
    out = np.ones(diff.shape[1])
    moving = sd > 0
    t = np.abs(mean[moving]) / (sd[moving] / math.sqrt(n))
    out[moving] = [math.erfc(value / math.sqrt(2)) for value in t]
    return out


def holm(p_values: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (same order as given; NaN stays NaN)."""
    order = sorted((p, i) for i, p in enumerate(p_values) if not math.isnan(p))
    adjusted = [math.nan] * len(p_values)
    running, m = 0.0, len(order)
    for rank, (p, i) in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted
