"""BIGRec's optional second grounding step (`adjust_ci.py`): fold a side score into the distance.

Per request, min-max normalise the distance D and the side score C (popularity here, or a
conventional model's scores), then rank ascending by  D~ * (1 + C~) ** (-gamma).
gamma = 0 is plain BIGRec; larger gamma favours items with a high side score.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

# The authors' grid: 0.01..1.00 in steps of 0.01, then 1..99; we add 0 (plain BIGRec).
GAMMA_GRID: tuple[float, ...] = (0.0, *[(i + 1) / 100 for i in range(100)], *[float(i) for i in range(2, 100)])


def minmax_rows(x: np.ndarray) -> np.ndarray:
    """(x - row min) / (row max - row min); a constant row becomes all zeros."""
    x = np.asarray(x, dtype=np.float64)
    low = x.min(axis=1, keepdims=True)
    span = x.max(axis=1, keepdims=True) - low
    return (x - low) / np.where(span > 0, span, 1.0)


def adjusted_distance(distance: np.ndarray, side: np.ndarray, gamma: float) -> np.ndarray:
    """D~ * (1 + C~) ** (-gamma), lower = better. `side` may be (N,) (same for every row) or (B, N)."""
    distance = np.asarray(distance, dtype=np.float64)
    side = np.broadcast_to(np.asarray(side, dtype=np.float64), distance.shape)
    return minmax_rows(distance) * np.power(1.0 + minmax_rows(side), -float(gamma))


def popularity(train: list[list[int]], num_items: int) -> np.ndarray:
    """Interaction counts per item over the training sequences (the authors' popularity variant)."""
    counts = np.zeros(num_items, dtype=np.float64)
    for item, count in Counter(item for seq in train for item in seq).items():
        counts[item] = count
    return counts
