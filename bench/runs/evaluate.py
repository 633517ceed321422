"""The shared evaluator: full ranking over every item, one metric implementation."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.data.types import EvalCases
from bench.method import Method
from bench.runs.eval_progress import EvalProgress
from bench.runs.metrics import DEFAULT_KS, metrics_from_ranks, target_ranks
from bench.train.resources import Stopwatch, peak_memory_mb, reset_peak_memory


@dataclass
class EvalResult:
    metrics: dict[str, float]
    num_cases: int
    seconds: float
    samples_per_sec: float
    peak_memory_mb: float
    peak_memory_kind: str
    ranks: np.ndarray | None = None  # 0-based target rank per request, in request order
    calls: int = 1  # scoring calls these figures cover (more than one when a ranking was resumed)
    calls_detail: list[dict[str, Any]] | None = None  # each of those calls' threads and git revision, if several


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


# Methods that can score a slice of the catalogue (`encode` + `score_items`) are ranked in item chunks
# above this many items, so memory is O(batch x chunk) instead of O(batch x N).
STREAM_ABOVE_ITEMS = 262_144
ITEM_CHUNK = 65_536


def streams(method: Method, num_items: int, item_chunk: int | None) -> bool:
    return method.scores_item_slices and (item_chunk is not None or num_items > STREAM_ABOVE_ITEMS)


def streamed_ranks(method: Any, users: list[int], histories: list[list[int]], targets: list[int], num_items: int,
                   chunk: int, mask_history: bool) -> np.ndarray:
    """Exact target ranks without a batch x N matrix: the catalogue is scored chunk by chunk, once to count
    how many items score at least as high as each target (ties count against the target), after the
    targets' own scores (from `score_targets`, or a pass over the slices that hold them)."""
    encoded = method.encode(users, histories)
    targets_np = np.asarray(targets, dtype=np.int64)
    seen = [np.asarray([i for i in h if i != t], dtype=np.int64) for h, t in zip(histories, targets)] \
        if mask_history else None

    def chunk_scores(start: int, end: int) -> np.ndarray:
        scores = _as_numpy(method.score_items(encoded, start, end))
        if scores.shape != (len(targets), end - start):
            raise ValueError(f"method {method.name!r} returned scores of shape {scores.shape} for items "
                             f"{start}..{end - 1}, expected ({len(targets)}, {end - start})")
        if np.isnan(scores).any():
            raise ValueError("scores contain NaN; a method must score every item")
        if seen is not None:
            for row, items in enumerate(seen):
                inside = items[(items >= start) & (items < end)]
                scores[row, inside - start] = -np.inf
        return scores

    direct = getattr(method, "score_targets", lambda *_: None)(encoded, targets)
    target_scores = None if direct is None else _as_numpy(direct).reshape(len(targets))
    if target_scores is None:  # one pass over the slices that hold a target
        for start in range(0, num_items, chunk):
            end = min(start + chunk, num_items)
            rows = np.flatnonzero((targets_np >= start) & (targets_np < end))
            if len(rows):
                scores = chunk_scores(start, end)
                if target_scores is None:  # the scores' own dtype: float32 compared as float32 (exact, faster)
                    target_scores = np.full(len(targets), np.nan, dtype=scores.dtype)
                target_scores[rows] = scores[rows, targets_np[rows] - start]
    at_least = np.zeros(len(targets), dtype=np.int64)
    for start in range(0, num_items, chunk):
        scores = chunk_scores(start, min(start + chunk, num_items))
        target_scores = target_scores.astype(scores.dtype, copy=False)  # a shortcut's scores in the slices' dtype
        at_least += (scores >= target_scores[:, None]).sum(axis=1)
    return at_least - 1


def rank_batch(method: Method, users: list[int], histories: list[list[int]], targets: list[int], num_items: int,
               item_chunk: int | None, mask_history: bool) -> np.ndarray:
    """0-based target ranks of one batch of requests over every item (ties count against the target)."""
    if streams(method, num_items, item_chunk):
        return streamed_ranks(method, users, histories, targets, num_items, item_chunk or ITEM_CHUNK, mask_history)
    scores = _as_numpy(method.score(users, histories))
    if scores.shape != (len(targets), num_items):
        raise ValueError(
            f"method {method.name!r} returned scores of shape {scores.shape}, "
            f"expected ({len(targets)}, {num_items}): one score per item"
        )
    if mask_history:
        scores = mask_history_items(scores, histories, targets)
    return target_ranks(scores, np.asarray(targets))


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
    item_chunk: int | None = None,
    measure_memory: bool = True,
    resume: EvalProgress | None = None,
    log: Any = print,
) -> EvalResult:
    """Score every item for every case, rank, and average the metrics.

    Timing covers scoring and ranking only (model loading and training are outside),
    synchronised with the device so GPU figures are honest. A method that scores item slices is
    ranked in item chunks (`item_chunk`, or automatically above STREAM_ABOVE_ITEMS items): the same
    ranks, bounded memory. `measure_memory=False` (validation during training) opens no fresh peak
    window, whose garbage collection costs ~0.5 s in a process holding an LLM stack (BIGRec's gamma
    grid validates 199 times). `resume` (bench.runs.eval_progress, one process only): ranks committed by
    an interrupted call are reused after their first batch ranks the same again, and this call commits
    its own as it goes; seconds and peak memory then cover every call.
    """
    if len(cases) == 0:
        raise ValueError("no evaluation cases: the split has no requests at this position")
    import contextlib

    from bench.train.distributed import block, gather, world
    from bench.train.progress import progress_bar

    everything = cases
    if world()[1] > 1:  # under torchrun: this rank's block of requests; gathered back in order below
        first, last = block(len(cases))
        cases = cases.subset(list(range(first, last)))
        resume = None
    fresh_window = reset_peak_memory(device) if measure_memory else False
    counts = ScoringCounts(method)
    if resume is not None:
        resume = checked_resume(method, cases, num_items, resume, batch_size, item_chunk, mask_history, log)
        counts.resume(resume, log)
    counts.start()  # after the re-ranked probe batch, which counts no request twice
    done = resume.done if resume is not None else 0
    watch = Stopwatch(device)
    ranks: list[np.ndarray] = [resume.ranks if resume is not None else np.zeros(0, dtype=np.int64)]
    bar = progress_bar(total=len(cases), desc=desc, unit="req", enabled=progress)
    bar.update(done)
    ranked_seconds = 0.0  # scoring seconds of the batches ranked in full (an interrupted one is ranked again)
    try:
        with contextlib.closing(bar):
            for start in range(done, len(cases), batch_size):
                users = cases.users[start:start + batch_size]
                histories = cases.histories[start:start + batch_size]
                targets = cases.targets[start:start + batch_size]
                with watch.running():
                    ranks.append(rank_batch(method, users, histories, targets, num_items, item_chunk, mask_history))
                ranked_seconds = watch.seconds
                counts.batch_ranked()
                bar.update(len(targets))
                if resume is not None:
                    if start == done:  # a call counts once it ranks something
                        resume.calls += 1
                        resume.details.append(_this_call())
                    _commit(resume, ranks, ranked_seconds, device, fresh_window, counts, final=False)
    except BaseException:  # Ctrl-C, SIGTERM, an error: what was ranked stays ranked
        if resume is not None:
            _commit(resume, ranks, ranked_seconds, device, fresh_window, counts, final=True)
        raise
    peak, kind = peak_memory_mb(device, since_reset=fresh_window)
    seconds = watch.seconds
    if resume is not None:
        _commit(resume, ranks, seconds, device, fresh_window, counts, final=True)
        seconds, peak = resume.seconds, max(peak, resume.peak_mb)
    # Every rank's block, in rank (= request) order; the slowest rank sets the global rate.
    blocks = gather((np.concatenate(ranks), seconds, peak, counts.counted()))
    counts.finish([b[3] for b in blocks])
    all_ranks = np.concatenate([b[0] for b in blocks])
    seconds = max(b[1] for b in blocks)
    return EvalResult(
        metrics=metrics_from_ranks(all_ranks, ks),
        num_cases=len(everything),
        seconds=seconds,
        samples_per_sec=len(everything) / seconds if seconds > 0 else float("inf"),
        peak_memory_mb=max(b[2] for b in blocks),
        peak_memory_kind=kind,
        ranks=all_ranks,
        calls=resume.calls if resume is not None else 1,
        calls_detail=list(resume.details) if resume is not None and resume.calls > 1 else None,
    )


def checked_resume(method: Method, cases: EvalCases, num_items: int, resume: EvalProgress, batch_size: int,
                   item_chunk: int | None, mask_history: bool, log: Any) -> EvalProgress:
    """`resume` when its first committed batch ranks the same now (outside the timed scoring), else a fresh
    progress in its place."""
    if resume.done == 0:
        return resume
    probe = min(batch_size, resume.done)
    again = rank_batch(method, cases.users[:probe], cases.histories[:probe], cases.targets[:probe], num_items,
                       item_chunk, mask_history)
    if not np.array_equal(again, resume.ranks[:probe]):
        log(f"evaluate: the {resume.done} ranks committed in {resume.path} do not reproduce on their first "
            f"{probe} requests (other weights or a scorer that is not deterministic here); ranking from the first")
        return EvalProgress(resume.path, resume.fingerprint)
    log(f"evaluate: resuming after {resume.done} of {len(cases)} requests ranked by {resume.calls} earlier "
        f"call(s) ({resume.seconds:.0f} s of scoring), first {probe} re-ranked the same (delete {resume.path} "
        "to rank from the first)")
    return resume


def _this_call() -> dict[str, Any]:
    """What a resumed ranking's record says of each call that ranked part of it."""
    import torch

    from bench.store.results import git_revision

    return {"threads": torch.get_num_threads(), "git_rev": git_revision()}


def _commit(resume: EvalProgress, ranks: list[np.ndarray], seconds: float, device: str, fresh_window: bool,
            counts: ScoringCounts, *, final: bool) -> None:
    """Hand this call's ranks, seconds and counts to the progress file (every SAVE_EVERY_SECONDS, and at the
    end); the ranks are joined only then, not after every batch."""
    resume.seconds = resume.base_seconds + seconds
    if final or resume.due():
        resume.ranks = np.concatenate(ranks)
        resume.counts = counts.counted() if counts.known else None
        if resume.done:
            resume.peak_mb = max(resume.peak_mb, peak_memory_mb(device, since_reset=fresh_window)[0])
            resume.save()


class ScoringCounts:
    """A method's `scoring_counts` over one ranking: what it held before (kept), what the earlier calls of a
    resumed ranking counted (from the progress file), what this call's batches add, and at the end the sum
    over torchrun ranks, handed back to the method for describe()."""

    def __init__(self, method: Method) -> None:
        self.live: Counter[str] | None = getattr(method, "scoring_counts", None)  # None: skipped Method.__init__
        self.held = Counter(self.live or {})
        self.earlier: Counter[str] = Counter()
        self.known = True
        self.at_start = Counter(self.held)
        self.ranked: dict[str, float] = {}

    def resume(self, progress: EvalProgress, log: Any) -> None:
        if progress.counts is None:
            self.known = False
            log("evaluate: the earlier calls' scoring counts were not saved (an older progress file); the "
                "record's counts (tokens per request, ...) cover this call's requests only")
        self.earlier = Counter(progress.counts or {})

    def start(self) -> None:
        self.at_start = Counter(self.live or {})
        self.ranked = dict(self.earlier)

    def batch_ranked(self) -> None:
        """A batch's ranks are in: its counts are too (a batch interrupted part-way, whose ranks are not
        kept, is ranked and counted again by the next call, so its partial counts must not be saved)."""
        self.ranked = dict(self.earlier + (Counter(self.live or {}) - self.at_start))

    def counted(self) -> dict[str, float]:
        """The earlier calls' counts plus what this call's fully ranked batches added."""
        return self.ranked

    def finish(self, per_rank: list[dict[str, float]]) -> None:
        if self.live is not None:
            self.live.clear()
            self.live.update(self.held)
            for counted in per_rank:
                self.live.update(counted)
