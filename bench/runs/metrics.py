"""Ranking metrics for one relevant item per request, over the full catalogue.

Tie rule (pessimistic): an item whose score equals the target's is ranked ahead of
the target. A method that scores every item the same therefore gets rank N-1, not 0,
so constant or degenerate scorers cannot look good by accident.
"""

from __future__ import annotations

import numpy as np

DEFAULT_KS = (5, 10, 20)
# Every reported metric, in table order (leaderboard columns, comparisons).
METRIC_NAMES = ("ndcg@5", "ndcg@10", "ndcg@20", "hr@5", "hr@10", "hr@20")


def target_ranks(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """0-based rank of each target among all items (pessimistic ties).

    scores: (B, N) float, higher is better. targets: (B,) item indices.
    """
    scores = np.asarray(scores)
    targets = np.asarray(targets, dtype=np.int64)
    if scores.ndim != 2 or scores.shape[0] != targets.shape[0]:
        raise ValueError(f"scores must be (B, N) with B={targets.shape[0]}, got {scores.shape}")
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN; a method must score every item")
    target_scores = scores[np.arange(len(targets)), targets][:, None]
    at_least = (scores >= target_scores).sum(axis=1)
    return (at_least - 1).astype(np.int64)


def per_request_metrics(ranks: np.ndarray, ks: tuple[int, ...] | list[int] = DEFAULT_KS) -> dict[str, np.ndarray]:
    """Each request's HR@K (rank < K) and NDCG@K (1/log2(rank+2) if rank < K else 0): the values whose
    means are the reported metrics, and what confidence intervals and paired tests resample."""
    ranks = np.asarray(ranks, dtype=np.int64)
    gains = 1.0 / np.log2(ranks.astype(np.float64) + 2.0)
    out: dict[str, np.ndarray] = {}
    for k in ks:
        hit = ranks < k
        out[f"ndcg@{k}"] = np.where(hit, gains, 0.0)
        out[f"hr@{k}"] = hit.astype(np.float64)
    return out


def metrics_from_ranks(ranks: np.ndarray, ks: tuple[int, ...] | list[int] = DEFAULT_KS) -> dict[str, float]:
    """HR@K = mean(rank < K); NDCG@K = mean(1/log2(rank+2) if rank < K else 0).

    With a single relevant item the ideal DCG is 1, so NDCG needs no normaliser.
    K larger than the catalogue is allowed: every rank is then inside the cut-off.
    """
    if np.asarray(ranks).size == 0:
        raise ValueError("no ranks to average: the evaluation set is empty")
    return {name: float(values.mean()) for name, values in per_request_metrics(ranks, ks).items()}
