"""The speed-accuracy frontier: each method's best full-data accuracy against its measured inference speed.

Why a separate module: the two coordinates come from different records. Accuracy is the method's best row
of the main table (all test requests, history not masked, training converged); speed is a `bench speed`
entry (same requests, same hardware, one process), because a run record's own samples/sec depends on
whatever else the machine was doing. A speed entry is used only when it says what a trained model's speed
is: trained weights, or a method whose work per request does not depend on its weights (one scoring pass,
or decoding of a fixed length). Quick-fit entries are marked, so a reader can tell them apart.

A method whose decoding is too slow for every request (LC-Rec's beam search: 2,000 seeded test requests) has
no main-table row, but a model trained on all the data all the same: it gets a frontier of its own
subsample, on which every other method's main-table model stands restricted to the same requests (from its
per-request ranks, as in the leaderboard's subsample tables), so no point is measured on other requests.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.errors import BenchError
from bench.report.formatting import defined
from bench.report.labels import effect_key, method_label
from bench.report.speed_tables import length_set_by_cap, mixed_precision, weights_text
from bench.store.request_ranks import load_ranks, positions_of
from bench.store.results import cut_short

Record = dict[str, Any]


@dataclass(frozen=True)
class FrontierPoint:
    method: str            # the run's method
    label: str             # the row's label (setting included), as in the tables
    ndcg10: float          # test NDCG@10 of the method's best main-table row (mean over its seeds)
    samples_per_sec: float  # median of the speed entry
    parameters: int | None  # the model's size (an LLM backbone's, else the model's own)
    weights: str           # trained / "trained, another run" / quick-fit / full-fit: the weights timed
    record: str            # the accuracy's run record (and how many more seeds the row averages)
    speed_record: str      # the speed's `bench speed` record (dataset-device-...)
    restricted: bool = False  # a full-test row taken on a subsample's requests (the subsample's own rows: False)


@dataclass(frozen=True)
class Scope:
    """The test requests a frontier's accuracy is measured on: all of them, or one seeded subsample."""

    requests: int | None = None  # None: every test request
    total: int | None = None
    seed: int | None = None

    def title(self) -> str:
        return "" if self.requests is None else f" · seeded subsample of {self.requests:,} of {self.total:,} requests"

    def slug(self) -> str:
        return "" if self.requests is None else f"-sub{self.requests}"


ALL_REQUESTS = Scope()
# method -> (its row's records, one of them, their mean test NDCG@10 on the scope, taken from a full-test row)
ScopeRows = dict[str, tuple[list[Path], Record, float, bool]]


def main_table(record: Record) -> bool:
    """A row a reader takes for the method: test position, every request, unmasked, converged."""
    sub = record.get("subsample")
    return (record.get("eval_target", "test") == "test" and not sub and not record.get("mask_history")
            and not cut_short(record) and defined(record.get("metrics", {}).get("ndcg@10")) is not None)


def own_subsample_row(record: Record) -> bool:
    """A model trained on all the data and scored on a seeded subsample of the test requests only (LC-Rec's
    beam search): test position, unmasked, converged; a model trained on a subsample is no full-data row."""
    sub = record.get("subsample") or {}
    return (record.get("eval_target", "test") == "test" and not record.get("mask_history") and not cut_short(record)
            and bool(sub) and not sub.get("train") and int(sub.get("eval_requests") or 0) < int(
                sub.get("eval_requests_total") or 0)
            and defined(record.get("metrics", {}).get("ndcg@10")) is not None)


def scope_of(record: Record) -> Scope:
    sub = record["subsample"]
    return Scope(int(sub["eval_requests"]), int(sub["eval_requests_total"]), sub.get("eval_seed"))


def subsample_only(records: list[tuple[Path, Record]], dataset: str) -> list[tuple[Path, Record]]:
    """The subsample rows of full-data models whose method has no main-table row: what only a subsample's
    frontier can show (a method with a main-table row stands there, restricted, as the same model)."""
    full = best_rows(records, dataset)
    return [(p, r) for p, r in records if r.get("dataset") == dataset and own_subsample_row(r)
            and r["method"] not in full]


def frontier_scopes(records: list[tuple[Path, Record]], dataset: str) -> list[Scope]:
    """Every test request, then each seeded subsample that such a model was scored on."""
    subsamples = {scope_of(r) for _, r in subsample_only(records, dataset)}
    return [ALL_REQUESTS, *sorted(subsamples, key=lambda s: (-(s.requests or 0), s.seed or 0))]


def test_ranks(path: Path, record: Record) -> tuple[np.ndarray, np.ndarray] | None:
    """(request indices, target ranks) of the record's test position; None without readable ranks (the
    leaderboard's tables already warn about a broken file)."""
    try:
        return (load_ranks(path, record) or {}).get("test")
    except BenchError:
        return None


def scope_rows(records: list[tuple[Path, Record]], dataset: str, scope: Scope) -> ScopeRows:
    """Each method's row on `scope`: on every request its best main-table row; on a subsample the method's
    best main-table row restricted to its requests (mean over seeds; left out where a run has no per-request
    ranks of them), and for a method without one its best row scored on the subsample itself."""
    from bench.runs.metrics import per_request_metrics

    full = best_rows(records, dataset)
    if scope == ALL_REQUESTS:
        return {m: (paths, record, mean, False) for m, (paths, record, mean) in full.items()}
    own_records = [(p, r) for p, r in subsample_only(records, dataset) if scope_of(r) == scope]
    rows: ScopeRows = {m: (paths, record, mean, False)
                       for m, (paths, record, mean) in best_rows(own_records, dataset, own_subsample_row).items()}
    scored = next((ranks for p, r in own_records if (ranks := test_ranks(p, r)) is not None), None)
    if scored is None:
        return rows
    wanted, by_path = np.sort(scored[0]), {p: r for p, r in records}
    for method, (paths, record, _) in full.items():
        values = []
        for path in paths:
            ranks = test_ranks(path, by_path.get(path, record))
            where = None if ranks is None else positions_of(ranks[0], wanted)
            if ranks is None or where is None:
                break
            values.append(float(per_request_metrics(ranks[1][where], (10,))["ndcg@10"].mean()))
        if values and len(values) == len(paths):
            rows[method] = (paths, record, sum(values) / len(values), True)
    return rows


def best_rows(records: list[tuple[Path, Record]], dataset: str,
              keep: Any = main_table) -> dict[str, tuple[list[Path], Record, float]]:
    """method -> (its best main-table row's records, one of them, their mean test NDCG@10): runs that differ
    only by seed are one row, as in the main table (bench.report.labels.effect_key); ties: the earlier name.
    A `bench evaluate` re-scoring counts only for a method without a row of its own: it is another run's
    model (taking the better of the two would pick on test noise, and the speed entry timed the source)."""
    rows = [(path, record) for path, record in sorted(records, key=lambda item: item[0].name)
            if record.get("dataset") == dataset and keep(record)]
    own = {record["method"] for _, record in rows if not record.get("weights_from")}
    groups: dict[tuple[str, str], list[tuple[Path, Record]]] = {}
    for path, record in rows:
        if not (record.get("weights_from") and record["method"] in own):
            groups.setdefault((record["method"], effect_key(record)), []).append((path, record))
    best: dict[str, tuple[list[Path], Record, float]] = {}
    for (method, _), runs in groups.items():
        mean = sum(float(r["metrics"]["ndcg@10"]) for _, r in runs) / len(runs)
        if method not in best or mean > best[method][2]:
            best[method] = ([p for p, _ in runs], runs[0][1], mean)
    return best


def speed_tells_trained_speed(entry: Record, record: Record, row: Record | None = None) -> bool:
    """Trained weights, or a speed that does not follow the weights: no decoding, or decoding of a length
    that is fixed (semantic IDs) or was not set by the token cap; quick-fit weights only of the row's own
    setting and precision (a default CoVE timed in place of the `cpu` preset's, or fp32 in place of bf16,
    would be another model)."""
    if weights_text(entry, record) == "trained":
        return True
    info, row_info = entry.get("method_info") or {}, (row or {}).get("method_info") or {}
    if row is not None and (info.get("setting") != row_info.get("setting") or mixed_precision(entry, row)):
        return False
    fixed = info.get("decode_length_fixed")
    return entry.get("generated_tokens_per_sample") is None or (bool(fixed) and not length_set_by_cap(entry))


def size_of(*infos: Record | None) -> int | None:
    for info in infos:
        size = (info or {}).get("backbone_params") or (info or {}).get("parameters")
        if size:
            return int(size)
    return None


def frontier_points(records: list[tuple[Path, Record]], speed_record: Record, scope: Scope = ALL_REQUESTS,
                    rows: ScopeRows | None = None) -> list[FrontierPoint]:
    """One point per method of `speed_record` (one `bench speed` run: same requests, same machine) that has a
    row on `scope` (scope_rows; `rows` when the caller has them already) and a usable entry."""
    from bench.runs.speed import record_speed_name

    dataset = str(speed_record.get("dataset"))
    rows = scope_rows(records, dataset, scope) if rows is None else rows
    points = []
    for method, entry in sorted((speed_record.get("methods") or {}).items()):
        if method not in rows:
            continue
        paths, record, mean, restricted = rows[method]
        if not speed_tells_trained_speed(entry, speed_record, record):
            continue
        weights = weights_text(entry, speed_record)
        timed = Path(str((entry.get("weights") or {}).get("record", ""))).name
        if weights == "trained" and timed not in {p.name for p in paths}:
            weights = "trained, another run"  # the same method's weights, not this row's
        seeds = f" (+{len(paths) - 1} seeds)" if len(paths) > 1 else ""
        points.append(FrontierPoint(
            method=method, label=method_label(record), ndcg10=mean,
            samples_per_sec=float(entry["samples_per_sec"]["median"]),
            parameters=size_of(entry.get("method_info"), record.get("method_info")),
            weights=weights, record=f"{dataset}/{paths[0].name}{seeds}" + (", restricted" if restricted else ""),
            speed_record=record_speed_name(speed_record), restricted=restricted))
    return points


def frontier_panels(records: list[tuple[Path, Record]], speed: list[Record], dataset: str, device: str,
                    scope: Scope = ALL_REQUESTS) -> list[tuple[int, Record, list[FrontierPoint]]]:
    """Per batch size, the points of the one speed record of (dataset, device kind) that places the most
    methods (ties: more of them timed with trained weights, then the newest): speeds of one run on one machine
    are never mixed with another's. On a subsample, the record must place a method scored on it (the reason
    that frontier exists), and the most of those wins first."""
    rows = scope_rows(records, dataset, scope)
    panels: dict[int, tuple[tuple[int, int, int, str], Record, list[FrontierPoint]]] = {}
    for speed_record in speed:
        if speed_record.get("dataset") != dataset or str(speed_record.get("device")).split(":")[0] != device:
            continue
        points = frontier_points(records, speed_record, scope, rows)
        own = sum(not p.restricted for p in points)
        if not own:
            continue
        key = (own, len(points), sum(p.weights == "trained" for p in points), str(speed_record.get("created", "")))
        size = int(speed_record.get("batch_size") or 1)
        if size not in panels or key > panels[size][0]:
            panels[size] = (key, speed_record, points)
    return [(size, speed_record, points) for size, (_, speed_record, points) in sorted(panels.items())]


def frontier_views(speed: list[Record]) -> list[tuple[str, str]]:
    """(dataset, device kind) pairs with speed records: one figure each."""
    return sorted({(str(r["dataset"]), str(r["device"]).split(":")[0]) for r in speed if r.get("methods")})


def size_text(parameters: int | None) -> str:
    if not parameters:
        return "size ?"
    if parameters >= 1e9:
        return f"{parameters / 1e9:.3g}B"
    if parameters >= 1e6:
        return f"{parameters / 1e6:.3g}M"
    return f"{parameters / 1e3:.3g}K"


def render_frontier(records: list[tuple[Path, Record]], speed: list[Record]) -> list[str]:
    """The frontier plots' points as tables, so the numbers behind each figure can be read and checked."""
    from bench.report.formatting import fmt_metric, fmt_number, markdown_table

    panels = [(dataset, device, scope, panel) for dataset, device in frontier_views(speed)
              for scope in frontier_scopes(records, dataset)
              for panel in frontier_panels(records, speed, dataset, device, scope)]
    if not panels:
        return []
    lines = ["## Speed-accuracy frontier", "",
             "Each method's best main-table row (test, all requests, unmasked, converged) against its median "
             "samples/s in one `bench speed` run (per batch size, the run that places the most methods: speeds of "
             "different runs or machines are never mixed). Speed timed with quick-fit weights is used only where a "
             "method's work per request does not follow its weights (one scoring pass, or decoding of fixed length); "
             "the plot draws those points hollow."
             + (" A model trained on all the data but scored on a seeded subsample of the test requests (beam search "
                "too slow for all of them) gets a frontier of that subsample, where the other methods' main-table "
                "rows are restricted to the same requests (from their per-request ranks)."
                if any(scope != ALL_REQUESTS for _, _, scope, _ in panels) else ""), ""]
    for dataset, device, scope, (size, speed_record, points) in panels:
        hardware = (speed_record.get("hardware") or {}).get("name") or device
        rows = [[p.label, size_text(p.parameters) if p.parameters else "–", fmt_metric(p.ndcg10),
                 fmt_number(p.samples_per_sec), p.weights, p.record]
                for p in sorted(points, key=lambda p: -p.samples_per_sec)]
        lines += [f"### {dataset} · {device} · batch {size}{scope.title()}", "",
                  f"Speed record `speed/{points[0].speed_record}.json` ({hardware}"
                  + (f", {str(speed_record['created'])[:10]}" if speed_record.get("created") else "") + ").",
                  "", *markdown_table(["method", "size", "NDCG@10", "samples/s (median)", "speed weights",
                                       "accuracy record"], rows), ""]
    return lines
