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

from bench.report.frontier_rows import (
    ALL_REQUESTS,
    Scope,
    ScopeRows,
    frontier_scopes,
    row_precision,
    scope_rows,
)
from bench.report.labels import method_label
from bench.report.speed_tables import length_set_by_cap, precision_of, weights_text

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


def speed_tells_trained_speed(record: Record, method: str, row: Record | None = None) -> bool:
    """Trained weights, or a speed that does not follow the weights: no decoding, or decoding of a length
    that is fixed (semantic IDs) or was not set by the token cap; quick-fit weights only of the row's own
    setting and precision (a default CoVE timed in place of the `cpu` preset's, or fp32 in place of bf16,
    would be another model)."""
    entry = record["methods"][method]
    if weights_text(entry, record) == "trained":
        return True
    info, row_info = entry.get("method_info") or {}, (row or {}).get("method_info") or {}
    if row is not None and (info.get("setting") != row_info.get("setting") or other_precision(record, method, row)):
        return False
    fixed = info.get("decode_length_fixed")
    return entry.get("generated_tokens_per_sample") is None or (bool(fixed) and not length_set_by_cap(entry))


def other_precision(speed_record: Record, method: str, row: Record) -> bool:
    """The method was timed in another number format than the accuracy row's model ran in: another model."""
    timed, scored = precision_of(speed_record, method), row_precision(row)
    return bool(timed and scored and timed != scored)


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
        if not speed_tells_trained_speed(speed_record, method, record):
            continue
        weights = weights_text(entry, speed_record)
        timed = Path(str((entry.get("weights") or {}).get("record", ""))).name
        if weights == "trained" and timed not in {p.name for p in paths}:
            if other_precision(speed_record, method, record):
                continue  # another run's weights in another number format: another model
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
