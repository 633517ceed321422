"""Is a difference real? Bootstrap confidence intervals over requests and paired tests between methods
scored on the same requests (per-request values from bench.runs.metrics.per_request_metrics).

The paired test is the randomisation (sign-flip) test IR evaluation recommends (Smucker, Allan & Carterette,
CIKM 2007): if A and B are interchangeable, each request's difference was as likely +d as -d, so the
two-sided p is the share of the 2^m sign patterns of the m nonzero differences whose |sum| reaches the
observed |sum|. It is valid at any number of requests (no normal or t approximation). Exact where the
patterns collapse to few distinct sums (equal magnitudes flip as a binomial count, so HR's +-1 differences
are the exact sign test at any size); otherwise SIGN_FLIPS seeded Monte-Carlo patterns, p = (hits + 1) /
(flips + 1), so the smallest reportable p is 1/(SIGN_FLIPS + 1).

Vectorised: one seeded (resamples x requests) matrix of multinomial counts serves every row and every
metric of a table, and one seeded stream of sign patterns (drawn for every request position, so a pair's p
does not depend on what else is tested beside it) serves every Monte-Carlo column of a table.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

RESAMPLES = 1000
SEED = 0
ALPHA = 0.05
SIGN_FLIPS = 10_000  # Monte-Carlo standard error at p = 0.05: 0.002
EXACT_TERMS = 2 ** 20  # enumerate the sign-flip distribution exactly when it has at most this many terms
FLIP_CHUNK = 1_000  # sign patterns per matrix product (memory: chunk x requests)
ZERO = 1e-12  # |difference| below this is float noise (seed means summed in another order): no difference
P_FLOOR = float(np.finfo(np.float64).tiny)  # exact tails below this underflow: reported as this, read as "<"


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


def paired_p_values(a: np.ndarray, b: np.ndarray, flips: int = SIGN_FLIPS, seed: int = SEED) -> np.ndarray:
    """Two-sided paired sign-flip p per column of (requests, columns) arrays scored on the same requests."""
    return sign_flip_p_values(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64), flips, seed)


def sign_flip_p_values(diff: np.ndarray, flips: int = SIGN_FLIPS, seed: int = SEED) -> np.ndarray:
    """Two-sided randomisation p per column of paired differences (requests, columns): exact where
    `exact_sign_flip_p` can enumerate, else one shared seeded Monte-Carlo stream. No requests: NaN;
    no nonzero difference: 1."""
    diff = np.array(diff, dtype=np.float64)
    if diff.ndim == 1:
        diff = diff[:, None]
    if diff.shape[0] == 0:
        return np.full(diff.shape[1], np.nan)
    diff[np.abs(diff) < ZERO] = 0.0
    out = np.ones(diff.shape[1])
    sampled = []
    for j in range(diff.shape[1]):
        exact = exact_sign_flip_p(diff[diff[:, j] != 0, j])
        if exact is None:
            sampled.append(j)
        else:
            out[j] = exact
    if sampled:
        out[sampled] = monte_carlo_sign_flip_p(diff[:, sampled], flips, seed)
    return out


def binomial_half_pmf(count: int) -> np.ndarray:
    """P(B = k) for k = 0..count, B ~ Binomial(count, 1/2): exact rationals rounded once up to 1,000 (so the
    small cases a reader checks by hand come out to the last bit), log space beyond so nothing overflows."""
    if count <= 1000:
        return np.array([math.comb(count, k) / 2 ** count for k in range(count + 1)])
    from scipy.special import gammaln

    k = np.arange(count + 1, dtype=np.float64)
    return np.exp(gammaln(count + 1.0) - gammaln(k + 1.0) - gammaln(count - k + 1.0) - count * math.log(2.0))


def exact_sign_flip_p(nonzero: np.ndarray) -> float | None:
    """Exact two-sided sign-flip p of one column's nonzero differences, or None when the distribution has
    more than EXACT_TERMS terms. Differences of equal magnitude u flip as a group: c of them add u (2B - c),
    B ~ Binomial(c, 1/2), so a group costs c + 1 terms instead of 2^c (20 distinct ones: 2^20)."""
    magnitudes, group, counts = np.unique(np.round(np.abs(nonzero), 12), return_inverse=True, return_counts=True)
    terms = 1
    for count in counts:
        terms *= int(count) + 1
        if terms > EXACT_TERMS:
            return None
    positive = np.bincount(group, weights=(nonzero > 0).astype(np.float64), minlength=len(magnitudes))
    sums, weights, observed = np.zeros(1), np.ones(1), 0.0
    for magnitude, count, up in zip(magnitudes, counts, positive):
        steps = magnitude * (2.0 * np.arange(count + 1) - count)
        sums = (sums[:, None] + steps[None, :]).ravel()
        weights = (weights[:, None] * binomial_half_pmf(int(count))[None, :]).ravel()
        observed += magnitude * (2.0 * up - count)
    # Sums equal in exact arithmetic may differ in the last bits: count those as reaching the observed one.
    reach = np.abs(sums) >= abs(observed) - 1e-9 * float(np.dot(magnitudes, counts))
    # Far tails underflow to 0; the p-value is then below any threshold, not zero.
    return min(1.0, max(float(weights[reach].sum()), P_FLOOR))


def monte_carlo_sign_flip_p(diff: np.ndarray, flips: int = SIGN_FLIPS, seed: int = SEED) -> np.ndarray:
    """(hits + 1) / (flips + 1) per column of (requests, columns), hits = seeded sign patterns whose |sum|
    reaches the observed |sum|. Every pattern has a sign for every request position (so a column's p is the
    same whatever columns share the call); only rows where some column differs enter the products."""
    rows = np.flatnonzero((diff != 0).any(axis=1))
    moving = diff[rows]
    observed = np.abs(moving.sum(axis=0)) - 1e-9 * np.abs(moving).sum(axis=0)
    byte, shift = rows >> 3, (7 - (rows & 7)).astype(np.uint8)  # where each moving request's sign bit lies
    rng = np.random.default_rng(seed)
    hits = np.zeros(diff.shape[1], dtype=np.int64)
    for start in range(0, flips, FLIP_CHUNK):
        size = min(FLIP_CHUNK, flips - start)
        bits = (rng.integers(0, 256, (size, (diff.shape[0] + 7) // 8), dtype=np.uint8)[:, byte] >> shift) & 1
        hits += (np.abs((2.0 * bits - 1.0) @ moving) >= observed).sum(axis=0)
    return (hits + 1) / (flips + 1)


def holm(p_values: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (same order as given; NaN stays NaN)."""
    order = sorted((p, i) for i, p in enumerate(p_values) if not math.isnan(p))
    adjusted = [math.nan] * len(p_values)
    running, m = 0.0, len(order)
    for rank, (p, i) in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted
