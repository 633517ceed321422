"""The speed-accuracy frontier: each method's best full-data accuracy against its measured inference speed.

Why a separate module: the two coordinates come from different records. Accuracy is the method's best row
of the main table (all test requests, history not masked, training converged); speed is a `bench speed`
entry (same requests, same hardware, one process), because a run record's own samples/sec depends on
whatever else the machine was doing. A speed entry is used only when it says what a trained model's speed
is: trained weights, or a method whose work per request does not depend on its weights (one scoring pass,
or decoding of a fixed length). Quick-fit entries are marked, so a reader can tell them apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.report.formatting import defined
from bench.report.labels import effect_key, method_label
from bench.report.speed_tables import length_set_by_cap, mixed_precision, weights_text
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


def main_table(record: Record) -> bool:
    """A row a reader takes for the method: test position, every request, unmasked, converged."""
    sub = record.get("subsample")
    return (record.get("eval_target", "test") == "test" and not sub and not record.get("mask_history")
            and not cut_short(record) and defined(record.get("metrics", {}).get("ndcg@10")) is not None)


def best_rows(records: list[tuple[Path, Record]], dataset: str) -> dict[str, tuple[list[Path], Record, float]]:
    """method -> (its best main-table row's records, one of them, their mean test NDCG@10): runs that differ
    only by seed are one row, as in the main table (bench.report.labels.effect_key); ties: the earlier name.
    A `bench evaluate` re-scoring counts only for a method without a row of its own: it is another run's
    model (taking the better of the two would pick on test noise, and the speed entry timed the source)."""
    rows = [(path, record) for path, record in sorted(records, key=lambda item: item[0].name)
            if record.get("dataset") == dataset and main_table(record)]
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


def frontier_points(records: list[tuple[Path, Record]], speed_record: Record) -> list[FrontierPoint]:
    """One point per method of `speed_record` (one `bench speed` run: same requests, same machine) that has a
    main-table row on its dataset and a usable entry."""
    from bench.runs.speed import record_speed_name

    dataset = str(speed_record.get("dataset"))
    rows = best_rows(records, dataset)
    points = []
    for method, entry in sorted((speed_record.get("methods") or {}).items()):
        if method not in rows:
            continue
        paths, record, mean = rows[method]
        if not speed_tells_trained_speed(entry, speed_record, record):
            continue
        weights = weights_text(entry, speed_record)
        timed = Path(str((entry.get("weights") or {}).get("record", ""))).name
        if weights == "trained" and timed not in {p.name for p in paths}:
            weights = "trained, another run"  # the same method's weights, not this row's
        points.append(FrontierPoint(
            method=method, label=method_label(record), ndcg10=mean,
            samples_per_sec=float(entry["samples_per_sec"]["median"]),
            parameters=size_of(entry.get("method_info"), record.get("method_info")),
            weights=weights, record=f"{dataset}/{paths[0].name}" + (f" (+{len(paths) - 1} seeds)" if len(paths) > 1
                                                                   else ""),
            speed_record=record_speed_name(speed_record)))
    return points


def frontier_panels(records: list[tuple[Path, Record]], speed: list[Record], dataset: str,
                    device: str) -> list[tuple[int, Record, list[FrontierPoint]]]:
    """Per batch size, the points of the one speed record of (dataset, device kind) that places the most
    methods (ties: more of them timed with trained weights, then the newest): speeds of one run on one machine
    are never mixed with another's."""
    panels: dict[int, tuple[tuple[int, int, str], Record, list[FrontierPoint]]] = {}
    for speed_record in speed:
        if speed_record.get("dataset") != dataset or str(speed_record.get("device")).split(":")[0] != device:
            continue
        points = frontier_points(records, speed_record)
        if not points:
            continue
        key = (len(points), sum(p.weights == "trained" for p in points), str(speed_record.get("created", "")))
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

    lines: list[str] = []
    for dataset, device in frontier_views(speed):
        for size, speed_record, points in frontier_panels(records, speed, dataset, device):
            if not lines:
                lines += ["## Speed-accuracy frontier", "",
                          "Each method's best main-table row (test, all requests, unmasked, converged) against its "
                          "median samples/s in one `bench speed` run (per batch size, the run that places the most "
                          "methods: speeds of different runs or machines are never mixed). Speed timed with "
                          "quick-fit weights is used only where a method's work per request does not follow its "
                          "weights (one scoring pass, or decoding of fixed length); the plot draws those points "
                          "hollow.", ""]
            hardware = (speed_record.get("hardware") or {}).get("name") or device
            rows = [[p.label, size_text(p.parameters) if p.parameters else "–", fmt_metric(p.ndcg10),
                     fmt_number(p.samples_per_sec), p.weights, p.record]
                    for p in sorted(points, key=lambda p: -p.samples_per_sec)]
            lines += [f"### {dataset} · {device} · batch {size}", "",
                      f"Speed record `speed/{points[0].speed_record}.json` ({hardware}"
                      + (f", {str(speed_record['created'])[:10]}" if speed_record.get("created") else "") + ").",
                      "", *markdown_table(["method", "size", "NDCG@10", "samples/s (median)", "speed weights",
                                           "accuracy record"], rows), ""]
    return lines
