"""Seeded, resumable batch orders shared by the methods that train on sequences of varied length."""

from __future__ import annotations

import random


def epoch_batches(lengths: list[int], batch_size: int, seed: int, bucket: bool) -> list[list[int]]:
    """The batches of one epoch, the same after a resume. Bucketed: the shuffled order is cut into
    windows of 64 batches, each sorted by length, and the batches are shuffled again, so padding
    shrinks while every epoch still mixes users."""
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    if not bucket:
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    window = batch_size * 64
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start:start + window], key=lambda i: lengths[i])
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches
