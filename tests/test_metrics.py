"""Metrics against hand-computed cases, including ties and K beyond the catalogue."""

import math

import numpy as np
import pytest

from bench.metrics import metrics_from_ranks, ndcg_single, target_ranks


def test_rank_is_number_of_items_scored_higher():
    scores = np.array([[0.1, 0.9, 0.5, 0.3]])
    assert target_ranks(scores, np.array([2])).tolist() == [1]  # only item 1 beats it
    assert target_ranks(scores, np.array([1])).tolist() == [0]
    assert target_ranks(scores, np.array([0])).tolist() == [3]


def test_ties_count_against_the_target():
    # Pessimistic rule: the two other items tied with the target rank ahead of it.
    scores = np.array([[1.0, 1.0, 1.0, 0.0]])
    assert target_ranks(scores, np.array([1])).tolist() == [2]
    # A constant scorer can never look good.
    assert target_ranks(np.zeros((1, 5)), np.array([0])).tolist() == [4]


def test_hand_computed_metrics():
    # ranks 0, 2, 7, 30 ; K = 5 hits the first two.
    ranks = np.array([0, 2, 7, 30])
    out = metrics_from_ranks(ranks, ks=(5, 10))
    assert out["hr@5"] == pytest.approx(2 / 4)
    assert out["hr@10"] == pytest.approx(3 / 4)
    assert out["ndcg@5"] == pytest.approx((1.0 + 1 / math.log2(4)) / 4)  # 1/log2(2) + 1/log2(4)
    assert out["ndcg@10"] == pytest.approx((1.0 + 0.5 + 1 / math.log2(9)) / 4)


def test_k_larger_than_catalogue_counts_every_rank():
    scores = np.array([[0.3, 0.2, 0.1], [0.1, 0.2, 0.3]])
    ranks = target_ranks(scores, np.array([2, 2]))
    assert ranks.tolist() == [2, 0]
    out = metrics_from_ranks(ranks, ks=(20,))
    assert out["hr@20"] == 1.0
    assert out["ndcg@20"] == pytest.approx((1 / math.log2(4) + 1.0) / 2)


def test_single_formula_and_errors():
    assert ndcg_single(0, 5) == 1.0
    assert ndcg_single(5, 5) == 0.0
    with pytest.raises(ValueError, match="NaN"):
        target_ranks(np.array([[np.nan, 1.0]]), np.array([0]))
    with pytest.raises(ValueError, match="empty"):
        metrics_from_ranks(np.array([], dtype=int))
