"""Semantic IDs: each item's RQ-VAE codes plus a last digit that tells apart items whose codes collide
(TIGER Sec. 3.1: "we append an extra token ... to make them unique"), cached on disk.

The cache key is the encoder's identity, the exact item texts and the RQ-VAE config, so a changed
title or setting never reuses stale IDs.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from bench.atomic import atomic_write, atomic_write_bytes


def with_collision_digit(codes: np.ndarray) -> np.ndarray:
    """(N, L) codes -> (N, L + 1): the last digit numbers the items sharing a code tuple (0, 1, ...) in
    item order, so every item's ID is unique and an item without a collision ends in 0."""
    seen: Counter[tuple[int, ...]] = Counter()
    digit = np.zeros(len(codes), dtype=np.int64)
    for item, row in enumerate(map(tuple, codes.tolist())):
        digit[item] = seen[row]
        seen[row] += 1
    return np.concatenate([codes.astype(np.int64), digit[:, None]], axis=1)


def id_statistics(ids: np.ndarray, codebook_size: int) -> dict[str, Any]:
    """Collisions before the extra digit and how much of each codebook is used."""
    groups = Counter(map(tuple, ids[:, :-1].tolist()))
    colliding = sum(size for size in groups.values() if size > 1)
    return {
        "items": int(len(ids)),
        "distinct_codes_before_digit": len(groups),
        "collision_rate": round(colliding / len(ids), 4),  # items sharing their codes with another item
        "max_items_per_code": max(groups.values()),
        "digit_range": int(ids[:, -1].max()) + 1,
        "codebook_use": [round(len(np.unique(ids[:, level])) / codebook_size, 4) for level in range(ids.shape[1] - 1)],
    }


def cache_key(encoder_id: str, texts: list[str], rqvae_config: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps({"encoder": encoder_id, "rqvae": rqvae_config}, sort_keys=True).encode())
    digest.update(b"\0")
    digest.update(json.dumps(texts, ensure_ascii=False).encode())
    return digest.hexdigest()[:20]


def load_or_build(path: Path, build: Any) -> tuple[np.ndarray, dict[str, Any], bool]:
    """(ids, facts, reused): the cached IDs, or `build() -> (ids, facts)` saved atomically."""
    meta = path.with_suffix(".json")
    if path.exists() and meta.exists():
        return np.load(path), json.loads(meta.read_text()), True
    ids, facts = build()

    def write_ids(tmp: Path) -> None:
        with open(tmp, "wb") as handle:  # np.save on a path would append ".npy" to the temp name
            np.save(handle, ids)

    atomic_write(path, write_ids)
    atomic_write_bytes(meta, json.dumps(facts).encode())  # last: the pair counts once both exist
    return ids, facts, False
