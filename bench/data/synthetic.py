"""Small datasets built in memory, for tests and learning checks (no files needed)."""

from __future__ import annotations

import random

from bench.data.split import leave_one_out
from bench.data.types import Catalogue, Dataset

COLOURS = ["red", "blue", "green", "amber", "violet", "teal", "coral", "ivory", "olive", "slate"]
THINGS = ["lipstick", "serum", "brush", "mask", "cream", "polish", "soap", "lotion", "comb", "oil"]


def synthetic_titles(num_items: int) -> list[str]:
    """Distinct readable titles ("red lipstick 0", ...)."""
    return [f"{COLOURS[i % 10]} {THINGS[(i // 10) % 10]} {i}" for i in range(num_items)]


def rule_dataset(
    num_items: int = 20,
    num_users: int = 200,
    length: int = 6,
    rule: str = "next",
    seed: int = 0,
) -> Dataset:
    """Users walk a deterministic chain: after item i comes item (i + 1) mod N.

    rule="next": the chain holds, so a model can learn it (HR@1 near 1).
    rule="random": the next item is uniformly random, so nothing beyond chance is learnable.
    """
    rng = random.Random(seed)
    sequences = []
    for _ in range(num_users):
        item = rng.randrange(num_items)
        seq = [item]
        for _ in range(length - 1):
            item = (item + 1) % num_items if rule == "next" else rng.randrange(num_items)
            seq.append(item)
        sequences.append(seq)
    catalogue = Catalogue([f"A{i:05d}" for i in range(num_items)], list(synthetic_titles(num_items)))
    return Dataset(f"synthetic-{rule}", catalogue, leave_one_out(sequences))
