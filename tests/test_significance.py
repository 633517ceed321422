"""Confidence intervals cover the truth at about their nominal rate, and the paired test finds a planted
difference but not a planted null."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.significance import bootstrap_ci, holm, paired_p_values


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


def test_paired_test_finds_a_planted_difference_and_not_a_planted_null():
    rng = np.random.default_rng(0)
    base = (rng.random(5000) < 0.05).astype(float)
    better = base.copy()
    better[rng.choice(np.flatnonzero(base == 0), 60, replace=False)] = 1.0  # +1.2 points of HR
    assert paired_p_values(better, base)[0] < 1e-6
    nulls = []
    for seed in range(40):  # same distribution, independent noise: p roughly uniform
        other = np.random.default_rng(100 + seed)
        a, b = (other.random(3000) < 0.05).astype(float), (other.random(3000) < 0.05).astype(float)
        nulls.append(paired_p_values(a, b)[0])
    assert np.mean(np.array(nulls) < 0.05) <= 0.15
    assert paired_p_values(base, base)[0] == 1.0  # identical rows: no difference
    assert math.isnan(paired_p_values(base[:10], base[:10] + 1)[0])  # too few requests to test


def test_holm_adjusts_in_step_down_order():
    adjusted = holm([0.01, 0.04, 0.03, math.nan])
    assert adjusted[:3] == pytest.approx([0.03, 0.06, 0.06]) and math.isnan(adjusted[3])
    assert holm([0.5, 0.9]) == [1.0, 1.0]
