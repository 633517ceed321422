"""The shared evaluator: full ranking over every item, one metric implementation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.data.types import EvalCases
from bench.method import Method
from bench.metrics import DEFAULT_KS, metrics_from_ranks, target_ranks
from bench.resources import Stopwatch, peak_memory_mb, reset_peak_memory


@dataclass
class EvalResult:
    metrics: dict[str, float]
    num_cases: int
    seconds: float
    samples_per_sec: float
    peak_memory_mb: float
    peak_memory_kind: str
    ranks: np.ndarray | None = None  # 0-based target rank per request, in request order


def _as_numpy(scores: Any) -> np.ndarray:
    if hasattr(scores, "detach"):
        return scores.detach().float().cpu().numpy()
    return np.asarray(scores, dtype=np.float64)


def mask_history_items(scores: np.ndarray, histories: list[list[int]], targets: list[int]) -> np.ndarray:
    """Push already-seen items to the bottom, but never the target itself."""
    scores = scores.copy()
    for row, (history, target) in enumerate(zip(histories, targets)):
        seen = [item for item in history if item != target]
        if seen:
            scores[row, seen] = -np.inf
    return scores


def evaluate(
    method: Method,
    cases: EvalCases,
    num_items: int,
    *,
    ks: tuple[int, ...] | list[int] = DEFAULT_KS,
    batch_size: int = 256,
    mask_history: bool = False,
    device: str = "cpu",
    progress: bool = True,
    desc: str = "evaluate",
) -> EvalResult:
    """Score every item for every case, rank, and average the metrics.

    Timing covers scoring and ranking only (model loading and training are outside),
    synchronised with the device so GPU figures are honest.
    """
    if len(cases) == 0:
        raise ValueError("no evaluation cases: the split has no requests at this position")
    import contextlib

    from bench.progress import progress_bar

    fresh_window = reset_peak_memory(device)
    watch = Stopwatch(device)
    ranks: list[np.ndarray] = []
    bar = progress_bar(total=len(cases), desc=desc, unit="req", enabled=progress)
    with contextlib.closing(bar):
        for start in range(0, len(cases), batch_size):
            users = cases.users[start:start + batch_size]
            histories = cases.histories[start:start + batch_size]
            targets = cases.targets[start:start + batch_size]
            with watch.running():
                scores = _as_numpy(method.score(users, histories))
            if scores.shape != (len(targets), num_items):
                raise ValueError(
                    f"method {method.name!r} returned scores of shape {scores.shape}, "
                    f"expected ({len(targets)}, {num_items}): one score per item"
                )
            if mask_history:
                scores = mask_history_items(scores, histories, targets)
            ranks.append(target_ranks(scores, np.asarray(targets)))
            bar.update(len(targets))
    all_ranks = np.concatenate(ranks)
    peak, kind = peak_memory_mb(device, since_reset=fresh_window)
    return EvalResult(
        metrics=metrics_from_ranks(all_ranks, ks),
        num_cases=len(cases),
        seconds=watch.seconds,
        samples_per_sec=len(cases) / watch.seconds if watch.seconds > 0 else float("inf"),
        peak_memory_mb=peak,
        peak_memory_kind=kind,
        ranks=all_ranks,
    )
