"""Test rankings that survive an interruption.

A generative method decodes its test requests one beam search at a time: BIGRec's or LC-Rec's 2,000
requests take hours on a CPU, after hours of training. A kill in that phase must not cost the ranks
already computed, so the evaluator commits them (with the seconds spent on them) to a file in the run's
work dir and a restarted run goes on after the last committed request. A file holds ranks only for
the exact requests and the exact run config it names (its fingerprint), and a restart re-ranks the first
committed batch before it trusts the rest: weights that changed in between (a run resumed into more
training) or a scorer that is not deterministic here would rank differently, and the file is then dropped.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.atomic import atomic_write
from bench.data.types import EvalCases
from bench.store.results import package_versions

PATTERN = "evaluate-*.npz"
SAVE_EVERY_SECONDS = 30.0


def progress_path(work_dir: Path, position: str) -> Path:
    """Where a run's partial ranking of one position lives."""
    return Path(work_dir) / f"evaluate-{position}.npz"


def clear_progress(work_dir: Path) -> None:
    """Drop every partial ranking of a run once its record is written (the ranks live beside the record)."""
    for path in Path(work_dir).glob(PATTERN):
        path.unlink(missing_ok=True)


def requests_fingerprint(cases: EvalCases, config: dict[str, Any], mask_history: bool,
                         work_dir: Path | None = None) -> str:
    """What the committed ranks depend on: the requests (users, histories, targets, in order), whether history
    is masked, the run's effective config (a re-scoring with another BIGRec gamma copies the same work dir),
    the package versions, and the weights, as the names, sizes and times of the files the training left in
    `work_dir` (a run resumed into more epochs, or a source retrained under `bench evaluate`, has other files).
    Not the code revision: as a resumed training does, a ranking goes on across commits (a decode of 2,000
    requests can outlast a session) and the record lists each call's revision (`eval_calls_detail`); delete
    the file to rank from the first after a change to the scoring."""
    digest = hashlib.sha256()
    digest.update(json.dumps([config, package_versions()], sort_keys=True, default=str).encode())
    digest.update(json.dumps([bool(mask_history), list(map(int, cases.users)), list(map(int, cases.targets))]).encode())
    for history in cases.histories:
        digest.update(np.asarray(history, dtype=np.int64).tobytes())
        digest.update(b"|")
    digest.update(json.dumps(weight_files(work_dir) if work_dir is not None else []).encode())
    return digest.hexdigest()[:16]


def weight_files(work_dir: Path) -> list[tuple[str, int, int]]:
    """(name, bytes, mtime ns) of every file under a work dir but its state, locks, temp files, JSON Lines
    (caches a scoring appends to, e.g. BIGRec's generated texts) and these progress files: what a training
    committed, which a load-only call reads and never rewrites."""
    root = Path(work_dir)
    if not root.is_dir():
        return []
    skipped = (".json", ".jsonl", ".lock", ".tmp")
    return sorted((str(path.relative_to(root)), path.stat().st_size, path.stat().st_mtime_ns)
                  for path in root.rglob("*")
                  if path.is_file() and not path.name.endswith(skipped) and not path.match(PATTERN))


@dataclass
class EvalProgress:
    """Ranks of the first `len(ranks)` requests, the scoring seconds they took over `calls` calls, and the
    highest peak memory any of those calls saw."""

    path: Path
    fingerprint: str
    ranks: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    seconds: float = 0.0
    calls: int = 0
    peak_mb: float = 0.0
    base_seconds: float = 0.0  # the earlier calls' share of `seconds`
    details: list[dict[str, Any]] = field(default_factory=list)  # threads and git revision of each call
    # The method's scoring_counts added by the calls that ranked these requests; None: not known (a file
    # saved before counts were kept).
    counts: dict[str, float] | None = field(default_factory=dict)
    saved_at: float = field(default_factory=time.monotonic)

    @property
    def done(self) -> int:
        return len(self.ranks)

    def save(self) -> None:
        meta = json.dumps({"fingerprint": self.fingerprint, "seconds": self.seconds, "calls": self.calls,
                           "peak_mb": self.peak_mb, "details": self.details, "counts": self.counts})

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as handle:  # np.savez on a path would append ".npz" to the temp name
                np.savez(handle, ranks=self.ranks.astype(np.int64), meta=np.asarray(meta))

        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, write)
        self.saved_at = time.monotonic()

    def due(self) -> bool:
        return time.monotonic() - self.saved_at >= SAVE_EVERY_SECONDS


def load_progress(path: Path, fingerprint: str) -> EvalProgress:
    """The committed progress at `path` when it names this fingerprint, else a fresh (empty) one."""
    fresh = EvalProgress(path, fingerprint)
    if not path.exists():
        return fresh
    try:
        with np.load(path, allow_pickle=False) as stored:
            meta = json.loads(str(stored["meta"]))
            ranks = np.asarray(stored["ranks"], dtype=np.int64)
        if meta.get("fingerprint") != fingerprint:
            return fresh
        seconds = float(meta["seconds"])
        return EvalProgress(path, fingerprint, ranks=ranks, seconds=seconds, calls=int(meta["calls"]),
                            peak_mb=float(meta["peak_mb"]), base_seconds=seconds,
                            details=list(meta.get("details", [])),
                            counts=meta["counts"] if "counts" in meta else ({} if len(ranks) == 0 else None))
    except Exception:  # empty, truncated or foreign: start over (the file only ever saves time)
        return fresh
