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


class _SliceScorer:
    """A method that scores item slices of a fixed score matrix, with an optional target-score shortcut."""

    name = "slices"

    def __init__(self, scores: np.ndarray, shortcut: str) -> None:
        self.scores, self.shortcut = scores, shortcut

    def encode(self, users: list[int], histories: list[list[int]]) -> np.ndarray:
        return self.scores[users]

    def score_items(self, encoded: np.ndarray, start: int, end: int) -> np.ndarray:
        return encoded[:, start:end].copy()

    def score_targets(self, encoded: np.ndarray, targets: list[int]) -> np.ndarray | None:
        if self.shortcut == "none":
            return None
        direct = encoded[np.arange(len(targets)), targets]
        return direct + 0.5 if self.shortcut == "off" else direct


@pytest.mark.parametrize("mask", [False, True])
def test_streamed_ranks_equal_full_ranks_with_or_without_the_target_shortcut(mask: bool):
    """Chunked ranking gives the ranks of the full matrix, ties included, whether the targets' scores come
    from score_targets or from a pass over their slices; a shortcut that is off by a little changes them
    (so the shortcut is really used)."""
    from bench.runs.evaluate import mask_history_items, streamed_ranks

    rng = np.random.default_rng(0)
    scores = rng.integers(0, 6, size=(9, 40)).astype(np.float32)  # many ties
    histories = [list(rng.integers(0, 40, size=3)) for _ in range(9)]
    targets = list(rng.integers(0, 40, size=9))
    full = scores if not mask else mask_history_items(scores, histories, targets)
    expected = target_ranks(full, targets)
    for shortcut in ("none", "exact"):
        got = streamed_ranks(_SliceScorer(scores, shortcut), list(range(9)), histories, targets, 40, 7, mask)
        assert np.array_equal(got, expected)
    off = streamed_ranks(_SliceScorer(scores, "off"), list(range(9)), histories, targets, 40, 7, mask)
    assert not np.array_equal(off, expected)
