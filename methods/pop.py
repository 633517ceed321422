"""Most-popular: every user gets the training-set popularity ranking. The honest floor."""

from __future__ import annotations

from collections import Counter

import numpy as np

from bench.data.types import Dataset
from bench.method import Method


class PopularityMethod(Method):
    name = "pop"
    data_parallel = True  # nothing to train; scoring is sharded by the evaluator
    refits_exactly = True  # counting is deterministic: `bench rescore` needs no saved weights

    def fit(self, dataset: Dataset) -> None:
        counts = Counter(item for seq in dataset.split.train for item in seq)
        self.popularity = np.zeros(dataset.num_items, dtype=np.float32)
        for item, count in counts.items():
            self.popularity[item] = count

    def score(self, users: list[int], histories: list[list[int]]) -> np.ndarray:
        return np.broadcast_to(self.popularity, (len(users), len(self.popularity)))

    def describe(self) -> dict[str, object]:
        return {"counted_on": "training sequences", "items_never_seen": int((self.popularity == 0).sum())}
