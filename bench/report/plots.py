"""Figures from recorded runs: CoVE compression sweep, inference speed and the speed-accuracy frontier
(matplotlib, Agg, PNG).

Data extraction (`setting_sweeps`) is separate from drawing so tests can check the numbers
without rendering. A plot without data is skipped, not drawn empty. PNGs carry no timestamp or
software metadata, so regenerating from the same records gives identical files.
"""

from __future__ import annotations

import io
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.atomic import atomic_write_bytes
from bench.config import config_hash
from bench.report.formatting import METRIC_TITLES, fmt_number
from bench.report.frontier import (
    ALL_REQUESTS,
    FrontierPoint,
    Scope,
    frontier_panels,
    frontier_scopes,
    frontier_views,
    size_text,
)
from bench.report.labels import swept_setting, swept_value
from bench.report.speed_tables import speed_order, speed_ratios, weights_text
from bench.report.tables import record_group
from bench.runs.speed import record_speed_name

SWEEP_METRICS = ("ndcg@10", "hr@10")


@dataclass
class Sweep:
    """Metric per value of a method's swept setting (CoVE: compression ratio) for one dataset and comparable
    group, plus the best other method on the same requests."""

    dataset: str
    group: Any  # bench.report.tables.Group
    method: str
    key: str  # the swept setting (bench.toml key)
    points: list[float]  # values of the swept setting, ascending
    values: dict[str, list[float]]  # metric -> mean over records at each point
    runs: list[int]  # records averaged at each point
    baseline: dict[str, tuple[str, float]]  # metric -> (method, value), best record of another method
    reference_point: float  # values are divided by the value at this point (1 when recorded)
    backbone: str = "?"
    setting: str = ""  # hash of what the points share besides the swept setting (keeps file names apart)

    def normalised(self, metric: str) -> list[float] | None:
        base = self.values[metric][self.points.index(self.reference_point)]
        return None if base == 0 else [value / base for value in self.values[metric]]


def sweep_setting(record: dict[str, Any]) -> tuple[str, str]:
    """(backbone, short hash of the method config without the swept setting, plus training subsample and
    budget): points of one sweep differ only in that setting (and seed, which is averaged)."""
    key = swept_setting(record["method"])
    section = {k: v for k, v in record.get("config", {}).get(record["method"], {}).items() if k != key}
    train = (record.get("subsample") or {}).get("train")
    shared = {"config": section, "train": train, "budget": record.get("max_train_minutes")}
    return str(record.get("method_info", {}).get("backbone", "?")), config_hash(shared)[:8]


def setting_sweeps(records: list[tuple[Path, dict[str, Any]]]) -> list[Sweep]:
    """One sweep per (dataset, comparable group, method, backbone and setting) holding a method's records at
    two or more values of its swept setting; the baseline line is the best other method on the same requests."""
    cells: dict[tuple[str, Any, tuple[str, str], str], dict[float, list[dict[str, Any]]]] = {}
    by_group: dict[tuple[str, Any], list[dict[str, Any]]] = {}
    for _, record in records:
        group = (record["dataset"], record_group(record))
        by_group.setdefault(group, []).append(record)
        ratio = swept_value(record)
        if ratio is not None:
            cells.setdefault((*group, sweep_setting(record), record["method"]), {}).setdefault(
                float(ratio), []).append(record)
    sweeps = []
    for key in sorted(cells, key=lambda k: (k[0], k[1].sort_key(), k[2])):
        by_ratio = cells[key]
        if len(by_ratio) < 2:
            continue
        ratios = sorted(by_ratio)
        values = {m: [statistics.fmean(r["metrics"][m] for r in by_ratio[ratio]) for ratio in ratios]
                  for m in SWEEP_METRICS}
        baseline = {}
        for metric in SWEEP_METRICS:
            candidates = [(r["metrics"][metric], r["method"]) for r in by_group.get(key[:2], [])
                          if r["method"] != key[3]]
            if candidates:
                value, method = max(candidates)
                baseline[metric] = (method, value)
        sweeps.append(Sweep(key[0], key[1], key[3], str(swept_setting(key[3])), ratios, values,
                            [len(by_ratio[r]) for r in ratios], baseline, 1.0 if 1.0 in ratios else ratios[0],
                            backbone=key[2][0], setting=key[2][1]))
    return sweeps


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    """Render to bytes first and write atomically; no metadata, so bytes repeat."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, metadata={"Software": None})
    atomic_write_bytes(path, buffer.getvalue())
    return path


def plot_sweep(sweep: Sweep, path: Path) -> Path:
    """Metric relative to its value at the first setting vs the swept setting (for CoVE's compression ratio:
    the paper's Figures 3-4)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(SWEEP_METRICS), figsize=(9, 3.6))
    for axis, metric in zip(axes, SWEEP_METRICS):
        relative = sweep.normalised(metric)
        ys = relative if relative is not None else sweep.values[metric]
        axis.plot(sweep.points, ys, marker="o", color="tab:green", label=sweep.method)
        for x, y, n in zip(sweep.points, ys, sweep.runs):
            if n > 1:
                axis.annotate(f"mean of {n}", (x, y), textcoords="offset points", xytext=(0, 6),
                              ha="center", fontsize=7)
        if metric in sweep.baseline:
            method, value = sweep.baseline[metric]
            base = sweep.values[metric][sweep.points.index(sweep.reference_point)]
            level = value / base if relative is not None else value
            axis.axhline(level, color="tab:gray", linestyle="--", label=f"best baseline ({method})")
        axis.set_xscale("log", base=2)
        axis.set_xticks(sweep.points, [f"{r:g}" for r in sweep.points])
        axis.set_xlabel(f"{sweep.key} (log scale)")
        if relative is not None:
            base = sweep.values[metric][sweep.points.index(sweep.reference_point)]
            axis.set_ylabel(f"{METRIC_TITLES[metric]} / its value at {sweep.key} {sweep.reference_point:g} "
                            f"(= {base:.4f})")
        else:
            axis.set_ylabel(f"{METRIC_TITLES[metric]} (absolute; zero at {sweep.key} {sweep.reference_point:g})")
        axis.set_title(METRIC_TITLES[metric])
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=8)
    fig.suptitle(f"{sweep.method} {sweep.key} sweep · {sweep.dataset} · {sweep.group.title()}\n"
                 f"backbone {sweep.backbone} · setting {sweep.setting} · same requests for every line", fontsize=9)
    fig.tight_layout()
    try:
        return _save(fig, path)
    finally:
        plt.close(fig)


LOG_SPAN = 30.0  # a log axis once the fastest bar is this many times the slowest: else small bars vanish
HATCHES = {"trained": "", "quick-fit": "///", "full-fit": "..."}


@dataclass
class SpeedBars:
    """What a speed plot draws, apart from drawing: one bar per method in the order measured."""

    names: list[str]
    medians: list[float]
    errors: tuple[list[float], list[float]]  # below and above the median: min and max over repetitions
    kinds: list[str]  # trained, quick-fit or full-fit weights: quick-fit bars are hatched
    labels: list[str]  # the number above each bar, in the one format of the tables (bench.report.formatting)
    log_scale: bool

    def hatch(self, kind: str) -> str:
        return HATCHES.get(kind, "xx")


def rate_text(value: float) -> str:
    """One format for bar labels and axis ticks alike ("4,266/s", "977/s", "0.395/s"), as in the tables."""
    return f"{fmt_number(value)}/s"


def speed_bars(record: dict[str, Any]) -> SpeedBars:
    """Bars of one speed record; a log axis only where the rates span more than LOG_SPAN x."""
    names = speed_order(record)
    rates = [record["methods"][n]["samples_per_sec"] for n in names]
    medians = [float(r["median"]) for r in rates]
    low = [m - float(r["min"]) for r, m in zip(rates, medians)]
    high = [float(r["max"]) - m for r, m in zip(rates, medians)]
    positive = [m for m in medians if m > 0]
    span = max(positive) / min(positive) if positive else 1.0
    return SpeedBars(names, medians, (low, high), [weights_text(record["methods"][n], record) for n in names],
                     [rate_text(m) for m in medians], span > LOG_SPAN)


def plot_speed(record: dict[str, Any], path: Path) -> Path:
    """Bars of samples/sec per method, whiskers from min to max over repetitions; quick-fit weights hatched
    (their speed is not a trained model's), a log axis only where rates span orders of magnitude."""
    plt = _pyplot()
    from matplotlib.patches import Patch
    from matplotlib.ticker import FuncFormatter

    bars = speed_bars(record)
    fig, axis = plt.subplots(figsize=(max(6.5, 1.6 + 1.3 * len(bars.names)), 3.8))
    drawn = axis.bar(bars.names, bars.medians, yerr=list(bars.errors), capsize=4, color="tab:blue",
                     edgecolor="black", linewidth=0.6)
    for patch, kind in zip(drawn, bars.kinds):
        patch.set_hatch(bars.hatch(kind))
    for x, (value, top, text) in enumerate(zip(bars.medians, bars.errors[1], bars.labels)):
        axis.annotate(text, (x, value + top), textcoords="offset points", xytext=(0, 5), ha="center", fontsize=8)
    axis.margins(y=0.15)
    if bars.log_scale:
        axis.set_yscale("log")
    axis.yaxis.set_major_formatter(FuncFormatter(lambda value, _: rate_text(value) if value > 0 else "0"))
    axis.yaxis.set_minor_formatter(FuncFormatter(lambda value, _: ""))
    axis.set_ylabel("inference samples/sec" + (" (log scale)" if bars.log_scale else ""))
    axis.set_xlabel("method")
    kinds = sorted(set(bars.kinds))
    axis.legend(handles=[Patch(facecolor="tab:blue", edgecolor="black", hatch=bars.hatch(k), label=f"{k} weights")
                         for k in kinds], fontsize=8, loc="best")
    hardware = record.get("hardware", {}).get("name") or record["device"]
    threads = record.get("hardware", {}).get("torch_threads")
    title = f"{record['dataset']} · {record['device']} ({hardware}) · batch {record.get('batch_size')}"
    title += f" · {threads} thread(s)" if threads else ""
    title += " · " + " / ".join(kinds) + " weights"
    ratios = speed_ratios(record)
    if ratios:
        title += "\n" + ", ".join(f"{a} / {b} = {r:.2g}×" for a, b, r in ratios) + " (medians; whiskers: min–max)"
    axis.set_title(title, fontsize=8)
    axis.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    try:
        return _save(fig, path)
    finally:
        plt.close(fig)


def plot_frontier(dataset: str, device: str, panels: list[tuple[int, dict[str, Any], list[FrontierPoint]]],
                  path: Path, scope: Scope = ALL_REQUESTS) -> Path:
    """NDCG@10 against inference samples/sec (log), one panel per batch size (each from one speed run), one
    point per method labelled with its size; hollow points were timed with quick-fit weights (their speed does
    not follow the weights)."""
    plt = _pyplot()
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.0), squeeze=False)
    for axis, (batch_size, speed_record, points) in zip(axes[0], panels):
        for point in points:
            hollow = point.weights != "trained"
            axis.scatter([point.samples_per_sec], [point.ndcg10], s=46, edgecolor="tab:blue",
                         facecolor="white" if hollow else "tab:blue", zorder=3)
            axis.annotate(f"{point.label} ({size_text(point.parameters)})", (point.samples_per_sec, point.ndcg10),
                          textcoords="offset points", xytext=(5, 4), fontsize=7)
        axis.set_xscale("log")
        # Labels at 1-2-5 steps over a short span, decades over a long one: matplotlib's own labels of minor ticks
        # (drawn when a span holds under one decade) overlap.
        speeds = [point.samples_per_sec for point in points]
        short = max(speeds) / min(speeds) < 30
        axis.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0) if short else (1.0,)))
        axis.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        axis.xaxis.set_minor_formatter(NullFormatter())
        axis.set_xlabel("inference samples/sec (log scale)")
        axis.set_ylabel("test NDCG@10 (best full-data row)" if scope == ALL_REQUESTS
                        else f"test NDCG@10 on {scope.requests:,} seeded requests")
        hardware = (speed_record.get("hardware") or {}).get("name") or device
        axis.set_title(f"batch {batch_size} · {hardware} · speed/{points[0].speed_record}", fontsize=8)
        axis.grid(True, alpha=0.3)
        axis.margins(x=0.25, y=0.15)
    fig.suptitle(f"speed-accuracy frontier · {dataset} · {device}{scope.title()}\nfilled: timed with the row's "
                 "trained weights, hollow: other weights whose speed does not follow training", fontsize=8)
    fig.tight_layout()
    try:
        return _save(fig, path)
    finally:
        plt.close(fig)


def frontier_plots(records: list[tuple[Path, dict[str, Any]]], speed: list[dict[str, Any]],
                   plots_dir: Path) -> list[Path]:
    written = []
    for dataset, device in frontier_views(speed):
        for scope in frontier_scopes(records, dataset):
            panels = frontier_panels(records, speed, dataset, device, scope)
            if panels:
                written.append(plot_frontier(dataset, device, panels,
                                             plots_dir / f"frontier-{dataset}-{device}{scope.slug()}.png", scope))
    return written


def write_plots(records: list[tuple[Path, dict[str, Any]]], speed: list[dict[str, Any]], plots_dir: Path) -> list[Path]:
    """Draw every plot that has data; remove PNGs left from data that is gone (the folder is generated)."""
    written = [plot_sweep(s, plots_dir / f"{s.method}-{s.key}-{s.dataset}-{s.group.slug()}-{s.setting}.png")
               for s in setting_sweeps(records)]
    written += [plot_speed(record, plots_dir / f"speed-{record_speed_name(record)}.png")
                for record in speed if record.get("methods")]
    written += frontier_plots(records, speed, plots_dir)
    if plots_dir.exists():
        for stale in sorted(set(plots_dir.glob("*.png")) - set(written)):
            stale.unlink()
    return sorted(written)
