"""Which (history, target) pairs BIGRec fine-tunes on, taken from the training split only."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Sample:
    user: int
    history: list[int]
    target: int


def choose_users(num_users: int, max_users: int, seed: int) -> list[int]:
    """All users, or a seeded sorted subsample (BIGRec's few-shot runs sample 1,024 examples)."""
    users = list(range(num_users))
    if 0 < max_users < num_users:
        users = sorted(random.Random(seed).sample(users, max_users))
    return users


def training_samples(
    train: list[list[int]], users: list[int], mode: str = "last", max_history: int = 10
) -> list[Sample]:
    """mode="last": one sample per user (history = sequence minus last, target = last item).
    mode="all_prefixes": one sample per position after the first.

    Histories keep the most recent `max_history` items (BIGRec's windows hold up to 10).
    Users with fewer than two training items give no sample.
    """
    if mode not in ("last", "all_prefixes"):
        raise ValueError(f"train_samples must be 'last' or 'all_prefixes', got {mode!r}")
    samples = []
    for user in users:
        seq = train[user]
        positions = range(1, len(seq)) if mode == "all_prefixes" else range(len(seq) - 1, len(seq))
        for t in positions:
            if t < 1:
                continue
            samples.append(Sample(user, seq[max(0, t - max_history):t] if max_history > 0 else seq[:t], seq[t]))
    return samples


def subsample_record(num_users: int, users: list[int], samples: list[Sample], seed: int) -> dict[str, Any] | None:
    """What goes into describe()["train_subsample"] (None when every user was used)."""
    if len(users) >= num_users:
        return None
    return {"users": len(users), "users_total": num_users, "samples": len(samples), "seed": seed}
