"""Metrics against hand-computed cases, including ties and K beyond the catalogue."""

import math

import numpy as np
import pytest

from bench.runs.metrics import metrics_from_ranks, target_ranks


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


def test_bad_scores_are_errors():
    with pytest.raises(ValueError, match="NaN"):
        target_ranks(np.array([[np.nan, 1.0]]), np.array([0]))
    with pytest.raises(ValueError, match="empty"):
        metrics_from_ranks(np.array([], dtype=int))


def test_a_rank_equal_to_k_is_outside_the_top_k():
    """Rank is 0-based: rank K is the (K+1)-th item, a miss at K, through the evaluator's own path."""
    from bench.data.types import EvalCases
    from bench.method import Method, RunContext
    from bench.runs.evaluate import evaluate

    class Ahead(Method):
        """Puts `history[0]` items above the target (item 11)."""

        name = "ahead"

        def fit(self, dataset):
            pass

        def score(self, users, histories):
            scores = np.zeros((len(users), 12))
            for row, history in enumerate(histories):
                scores[row, :history[0]] = 2.0
                scores[row, 11] = 1.0
            return scores

    result = evaluate(Ahead({}, RunContext()), EvalCases([0, 1], [[5], [4]], [11, 11]), 12, ks=(5, 6),
                      progress=False)
    assert result.ranks.tolist() == [5, 4]
    assert result.metrics["hr@5"] == 0.5 and result.metrics["hr@6"] == 1.0
    assert result.metrics["ndcg@5"] == pytest.approx(1 / math.log2(6) / 2)
    assert result.metrics["ndcg@6"] == pytest.approx((1 / math.log2(7) + 1 / math.log2(6)) / 2)


def test_committed_ranks_reproduce_their_recorded_metrics():
    """Every committed record with per-request ranks: the metric code of today, on the ranks stored when the
    run was made, gives the metrics recorded then, exactly (a changed hit rule or gain would not)."""
    from pathlib import Path

    from bench.store.request_ranks import load_ranks
    from bench.store.results import iter_records

    results = Path(__file__).resolve().parent.parent / "results"
    checked = 0
    for path, record in iter_records(results, strict=True):
        stored = load_ranks(path, record)
        if stored is None:
            continue
        ks = record["config"]["eval"]["ks"]
        expected = {record.get("eval_target", "test"): record["metrics"]}
        expected.update({position: entry["metrics"] for position, entry in
                         (record.get("metrics_by_position") or {}).items()})
        assert set(stored) == set(expected), path.name
        for position, metrics in expected.items():
            assert metrics_from_ranks(stored[position][1], ks) == metrics, f"{path.name} {position}"
            checked += 1
    assert checked >= len(list((results / "runs").glob("*/*.ranks.npz")))
