"""Confidence intervals cover the truth at about their nominal rate; the paired test is the exact (or
Monte-Carlo) sign-flip randomisation test, checked against brute-force enumeration, and it finds a planted
difference while rejecting a planted null at about its nominal rate."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from bench.report import significance
from bench.report.significance import bootstrap_ci, holm, paired_p_values


def test_bootstrap_interval_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(1)
    true_hit_rate, covered, trials = 0.06, 0, 200
    for trial in range(trials):
        hits = (rng.random(2000) < true_hit_rate).astype(float)  # a HR@10-like per-request column
        low, high = bootstrap_ci(hits, resamples=500, seed=trial)
        covered += int(low[0] <= true_hit_rate <= high[0])
    assert 0.90 <= covered / trials <= 0.99  # binomial sd at 95 %: ~1.5 points over 200 trials


def test_interval_narrows_with_more_requests():
    rng = np.random.default_rng(0)
    small, large = rng.random(500), rng.random(20000)
    width = [float(np.diff(np.concatenate(bootstrap_ci(v)))[0]) for v in (small, large)]
    assert width[1] < width[0] / 4  # ~1/sqrt(40) of it


def brute_force_p(diff: np.ndarray) -> float:
    """Two-sided sign-flip p by listing every one of the 2^m sign patterns of the nonzero differences."""
    nonzero = [float(d) for d in diff if d != 0]
    observed = abs(sum(nonzero))
    reach = sum(abs(sum(s * d for s, d in zip(signs, nonzero))) >= observed - 1e-9
                for signs in itertools.product((1, -1), repeat=len(nonzero)))
    return reach / 2 ** len(nonzero)


def enumerated_p(diff: np.ndarray) -> float:
    """The same enumeration, vectorised, for up to ~22 nonzero differences (2^22 sums)."""
    nonzero = diff[diff != 0]
    sums = np.zeros(1)
    for d in nonzero:
        sums = np.concatenate([sums + d, sums - d])
    return float(np.mean(np.abs(sums) >= abs(nonzero.sum()) - 1e-9))


def test_thirty_requests_where_a_hits_five_and_b_none_give_the_exact_p_of_one_in_sixteen():
    """Only all-plus and all-minus of the 2^5 sign patterns reach |5|: p = 2/32 (the normal approximation said
    0.016, a one-sided test would say 0.031)."""
    hits_a, hits_b = np.zeros(30), np.zeros(30)
    hits_a[:5] = 1.0  # an HR-like 0/1 metric
    assert paired_p_values(hits_a, hits_b)[0] == 0.0625
    assert paired_p_values(hits_b, hits_a)[0] == 0.0625  # two-sided
    ndcg_a = np.zeros(30)
    ndcg_a[:5] = [1.0, 0.6309, 0.5, 0.4307, 0.3869]  # the same hits at ranks 0-4: still only 2 patterns reach
    assert paired_p_values(ndcg_a, hits_b)[0] == pytest.approx(0.0625, abs=1e-12)


def test_exact_p_equals_brute_force_enumeration_of_every_sign_pattern():
    rng = np.random.default_rng(7)
    for trial in range(12):
        n = int(rng.integers(1, 40))
        # NDCG-like values with repeated magnitudes (equal gains flip as a group) and many ties at zero.
        a = np.where(rng.random(n) < 0.4, 1 / np.log2(rng.integers(0, 4, n) + 2), 0.0)
        b = np.where(rng.random(n) < 0.4, 1 / np.log2(rng.integers(0, 4, n) + 2), 0.0)
        if np.count_nonzero(a - b) > 14:
            continue
        assert paired_p_values(a, b)[0] == pytest.approx(brute_force_p(a - b), abs=1e-12), trial
    assert math.isnan(paired_p_values(np.zeros(0), np.zeros(0))[0])  # no requests: nothing to test
    assert paired_p_values(np.ones(10), np.ones(10))[0] == 1.0  # no difference at all


def test_monte_carlo_p_agrees_with_full_enumeration_and_never_reaches_zero():
    """22 distinct magnitudes have 2^22 sums: too many to enumerate inside the harness, so it samples."""
    rng = np.random.default_rng(3)
    diff = rng.normal(0.6, 1.0, 22)
    exact, sampled = enumerated_p(diff), paired_p_values(diff, np.zeros(22))[0]
    flips = significance.SIGN_FLIPS
    assert 0.01 < exact < 0.2 and abs(sampled - exact) < 4 * math.sqrt(exact * (1 - exact) / flips) + 1 / flips
    # A difference no sign pattern of 40 distinct gains can match: p = (0 + 1) / (flips + 1), never 0.
    assert paired_p_values(rng.random(40) + 1.0, np.zeros(40))[0] == pytest.approx(1 / (flips + 1))


def test_paired_test_finds_a_planted_difference():
    rng = np.random.default_rng(0)
    base = (rng.random(5000) < 0.05).astype(float)
    better = base.copy()
    better[rng.choice(np.flatnonzero(base == 0), 60, replace=False)] = 1.0  # +1.2 points of HR
    assert paired_p_values(better, base)[0] == pytest.approx(2.0 ** -59)  # exact sign test: 60 of 60 up
    assert paired_p_values(base[:10], base[:10] + 1)[0] == pytest.approx(2 / 1024)  # small n is testable


def test_a_planted_null_is_rejected_at_about_alpha_neither_more_nor_less():
    """Same distribution, independent noise: at alpha 5 % the test must reject 2-9 % of seeded null datasets,
    with few requests (exact), HR (the exact sign test) and NDCG (Monte Carlo) alike."""

    def rate(datasets: int, draw: callable) -> float:
        rejected = [paired_p_values(*draw(np.random.default_rng(1000 + seed)))[0] < 0.05 for seed in range(datasets)]
        return float(np.mean(rejected))

    def ndcg(rng: np.random.Generator, n: int) -> np.ndarray:
        return np.where(rng.random(n) < 0.15, 1 / np.log2(rng.integers(0, 10, n) + 2), 0.0)

    few = rate(600, lambda rng: (rng.random(12), rng.random(12)))
    hr = rate(1000, lambda rng: ((rng.random(2000) < 0.05).astype(float), (rng.random(2000) < 0.05).astype(float)))
    monte_carlo = rate(300, lambda rng: (ndcg(rng, 300), ndcg(rng, 300)))
    assert 0.02 <= few <= 0.09 and 0.02 <= hr <= 0.09 and 0.02 <= monte_carlo <= 0.09, (few, hr, monte_carlo)


def test_a_columns_p_does_not_depend_on_the_columns_tested_beside_it():
    """compare (one pair) and the leaderboard (a whole table in one call) must print the same p."""
    rng = np.random.default_rng(5)
    column = np.where(rng.random(3000) < 0.1, rng.random(3000) - 0.45, 0.0)
    others = np.where(rng.random((3000, 4)) < 0.2, rng.random((3000, 4)), 0.0)
    alone = significance.sign_flip_p_values(column)[0]
    assert significance.sign_flip_p_values(np.column_stack([others, column]))[-1] == alone


def test_holm_adjusts_in_step_down_order():
    adjusted = holm([0.01, 0.04, 0.03, math.nan])
    assert adjusted[:3] == pytest.approx([0.03, 0.06, 0.06]) and math.isnan(adjusted[3])
    assert holm([0.5, 0.9]) == [1.0, 1.0]
