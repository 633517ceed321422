"""Per-request outcomes beside each record: the target's rank for every evaluated request.

Aggregates hide whether two methods differ beyond noise; ranks per request make confidence intervals
and paired tests possible without re-running anything. Stored as `<record>.ranks.npz` (int32 ranks
and the request indices they belong to, one pair per scored position; ~45 KB compressed for 22k
requests), written atomically before the record, which names the file and its sha256.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from bench.atomic import atomic_write
from bench.errors import BenchError


def ranks_path(record_path: Path) -> Path:
    return record_path.with_name(record_path.stem + ".ranks.npz")


def save_ranks(record_path: Path, by_position: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, Any]:
    """Write {position: (request indices, 0-based target ranks)}; return the record's `ranks` entry."""
    path = ranks_path(record_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for position, (indices, ranks) in by_position.items():
        if len(indices) != len(ranks):
            raise ValueError(f"{position}: {len(indices)} request indices for {len(ranks)} ranks")
        arrays[f"{position}_index"] = np.asarray(indices, dtype=np.int32)
        arrays[f"{position}_rank"] = np.asarray(ranks, dtype=np.int32)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:  # np.savez on a path would append ".npz" to the temp name
            np.savez_compressed(handle, **arrays)

    atomic_write(path, write)
    return {"file": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "positions": {position: len(ranks) for position, (_, ranks) in by_position.items()}}


def load_ranks(record_path: Path, record: dict[str, Any]) -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
    """The record's per-request ranks, or None when it has none; a file that does not match the hash
    the record names is an error (the ranks would not be this run's)."""
    entry = record.get("ranks")
    if not entry:
        return None
    path = record_path.with_name(entry["file"])
    if not path.exists():
        raise BenchError(f"{record_path}: names per-request ranks in {path.name}, which is missing")
    if hashlib.sha256(path.read_bytes()).hexdigest() != entry["sha256"]:
        raise BenchError(f"{path}: sha256 differs from the one in {record_path.name}; not this run's ranks")
    with np.load(path) as data:
        return {position: (data[f"{position}_index"].astype(np.int64), data[f"{position}_rank"].astype(np.int64))
                for position in entry["positions"]}


def positions_of(index: np.ndarray, wanted: np.ndarray) -> np.ndarray | None:
    """Where each of the `wanted` request indices stands in a run's `index` (its per-request order), or None
    when the run did not score every one: how a full run is taken on a subsample's requests."""
    order = np.argsort(index, kind="stable")
    where = np.searchsorted(index[order], wanted)
    if (where >= len(index)).any() or not np.array_equal(index[order][where], wanted):
        return None
    return order[where]
