"""Comparison tables from recorded runs only (results/runs/*/*.json).

Rows are grouped so that only comparable numbers share a table: same dataset split, same
evaluated position, same history masking and the same evaluated requests. Published numbers
(results/reference/*.csv) are shown beside ours in their own block and never ranked against
them. Output is a pure function of the files read: regenerating gives identical bytes.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.atomic import atomic_write_text
from bench.errors import BenchError
from bench.report.formatting import METRIC_TITLES, fmt_metric, fmt_number, markdown_table
from bench.report.frontier import render_frontier
from bench.report.labels import method_label, train_seconds
from bench.report.perf_report import render_perf
from bench.report.plots import write_plots
from bench.report.scale_report import load_scale, render_scale
from bench.report.significance import ALPHA, SIGN_FLIPS
from bench.report.speed_tables import load_speed, render_speed
from bench.report.tables import METRIC_COLUMNS, POSITION_TEXT, Group, Row, leaderboard_rows
from bench.store.results import iter_records
from bench.textfiles import read_text

Record = dict[str, Any]

REFERENCE_COLUMNS = ("dataset", "method", "compression_ratio", "eval_target", "source")
PROTOCOL_LINE = ("Full ranking over every item; one relevant item per request; ties count against the "
                 "target. Rows whose training a time budget (or `bench run --finish`) stopped before it converged "
                 "have tables of their own "
                 "(\"not converged\"), never ranked beside converged rows. A subsample table also holds every "
                 "converged full-data run that has per-request ranks, restricted to the subsample's requests "
                 "(computed from those ranks, not re-run), so every method is compared on exactly the same requests; "
                 "full runs that did not converge are restricted the same way into that subsample's not-converged "
                 "table. "
                 "Bold = best in its table (only rows scored on the same requests share a table), and "
                 "every row whose paired difference from the best is not significant (two-sided paired randomisation "
                 f"(sign-flip) test on per-request values, exact or from {SIGN_FLIPS:,} seeded sign flips, "
                 "Holm-corrected within the table, α = 0.05). ± = half-width of the 95 % bootstrap interval over "
                 "requests (1,000 seeded resamples). Both need per-request ranks: † marks a value not tested "
                 "against its column's best (this row or the best has none, or they were scored on other "
                 "requests), never bold whatever its value. Runs that differ only by seed share one row: the mean "
                 "over seeds, `sd` its standard deviation, the seed column says how many; its ± and test use the "
                 "per-request values averaged over the seeds. `weights=H` in a label: run H's own trained weights "
                 "scored again under this table's options (`bench evaluate`, nothing retrained); the epoch is the one "
                 "run H chose under its options.")
UNTESTED_MARK = "†"
UNTESTED_NOTE = (f"{UNTESTED_MARK} untested: this row or the column's best has no per-request ranks (or they were "
                 "scored on other requests), so it is not bold whatever its value; `bench rescore` adds ranks to "
                 "older records.")


@dataclass
class WrittenLeaderboard:
    markdown_text: str
    paths: list[Path]


def render_group(rows: list[Row]) -> list[str]:
    metrics = [m for m in METRIC_COLUMNS if any(row[m] is not None for row in rows)]
    # A lone row is not "best" of anything: bold only when there is a comparison.
    best = {m: max(row[m] for row in rows if row[m] is not None) for m in metrics} if len(rows) > 1 else {}
    header = ["method", "backbone", "swept", *(METRIC_TITLES[m] for m in metrics), "position", "data",
              "training", "seed", "train s", "samples/s", "device", "date"]
    lines = []
    marked = False
    for row in rows:
        cells = [row["method"], row["backbone"] or "–", row["swept"] or "–"]
        for metric in metrics:
            text = fmt_metric(row[metric])
            interval = (row.get("ci") or {}).get(metric)
            if interval is not None:
                text += f" ±{(interval[1] - interval[0]) / 2:.4f}"
            spread = (row.get("seed_sd") or {}).get(metric)
            if spread is not None:
                text += f" sd {spread:.4f}"
            # Zero is nobody's win: a column where the best is 0 has no bold.
            is_best = row[metric] is not None and row[metric] == best.get(metric) and row[metric] > 0
            p = (row.get("p_vs_best") or {}).get(metric)
            tied = bool(best) and p is not None and not math.isnan(p) and p >= ALPHA and best.get(metric, 0) > 0
            if not (is_best or tied) and best.get(metric, 0) > 0 and metric in row.get("untested", ()):
                text, marked = f"{text} {UNTESTED_MARK}", True
            cells.append(f"**{text}**" if is_best or tied else text)
        cells += [row["position"], row["data"], row["training"], str(row["seed"]), fmt_number(row["train_s"]),
                  fmt_number(row["samples_per_sec"]), str(row["device"]), row["date"]]
        lines.append(cells)
    return markdown_table(header, lines) + (["", UNTESTED_NOTE] if marked else [])


def render_published(rows: list[Row]) -> list[str]:
    metrics = [m for m in METRIC_COLUMNS if any(row[m] is not None for row in rows)]
    header = ["method", "ratio", *(METRIC_TITLES[m] for m in metrics), "position", "source"]
    lines = [[row["method"], row["compression_ratio"] or "–", *(fmt_metric(row[m]) for m in metrics),
              POSITION_TEXT.get(row["eval_target"], row["eval_target"]), f"{row['source']} ({row['file']})"]
             for row in rows]
    return markdown_table(header, lines)


def load_reference(reference_dir: Path) -> list[Row]:
    """Published numbers from reference/*.csv, checked so a typo fails loudly with its line."""
    rows: list[Row] = []
    for path in sorted(reference_dir.glob("*.csv")) if reference_dir.exists() else []:
        reader = csv.DictReader(io.StringIO(read_text(path)))
        missing = [column for column in REFERENCE_COLUMNS if column not in (reader.fieldnames or [])]
        if missing:
            raise BenchError(f"{path}: missing columns {missing}")
        for line, raw in enumerate(reader, start=2):
            row: Row = {key: (value or "").strip() for key, value in raw.items()}
            for metric in METRIC_COLUMNS:
                text = row.get(metric, "")
                try:
                    row[metric] = float(text) if text else None
                except ValueError as error:
                    raise BenchError(f"{path}:{line}: {metric} is not a number: {text!r}") from error
                if row[metric] is not None and not 0.0 <= row[metric] <= 1.0:
                    raise BenchError(f"{path}:{line}: {metric} = {text} is outside [0, 1]")
            if not row["dataset"] or not row["method"] or not row["source"]:
                raise BenchError(f"{path}:{line}: dataset, method and source are required")
            row["file"] = path.name
            rows.append(row)
    return rows


def render_compact(records: list[Record]) -> list[str]:
    """A short plain table of some runs (the demo's): one line each, under 100 characters; the label column
    is wide enough for a setting with one override (bigrec[default,epochs=1])."""
    lines = [f"{'method':<30} {'data':<28} {'NDCG@10':>8} {'HR@10':>7} {'train s':>9} {'samples/s':>10}"]
    for record in records:
        sub = record.get("subsample") or {}
        data = (f"{sub['eval_requests']:,}/{sub['eval_requests_total']:,} req" if sub.get("eval_requests")
                else "full")
        if (sub.get("train") or {}).get("users"):
            data += f", {sub['train']['users']:,} users"
        metrics = record["metrics"]
        lines.append(f"{method_label(record)[:30]:<30} {data[:28]:<28} {metrics.get('ndcg@10', 0):>8.4f} "
                     f"{metrics.get('hr@10', 0):>7.4f} {fmt_number(train_seconds(record)):>9} "
                     f"{fmt_number(record.get('samples_per_sec')):>10}")
    return lines


def render_markdown(
    tables: dict[str, dict[Group, list[Row]]],
    published: list[Row] | None = None,
    speed: list[Record] | None = None,
    title: str = "# Leaderboard",
    frontier: list[str] | None = None,
) -> str:
    published = published or []
    lines = [title, "", PROTOCOL_LINE, ""]
    datasets = sorted(set(tables) | {row["dataset"] for row in published})
    for dataset in datasets:
        lines += [f"## {dataset}", ""]
        groups = tables.get(dataset, {})
        if not groups:
            lines += ["No recorded runs yet.", ""]
        for group, rows in groups.items():
            lines += [f"### {dataset} · {group.title()}", "", *render_group(rows), ""]
        mine = [row for row in published if row["dataset"] == dataset]
        if mine:
            mixed = len({row["eval_target"] for row in mine}) > 1
            lines += [f"### {dataset} · published numbers (not run here)", "",
                      "Reported by the papers' authors on their own splits and code; see "
                      "[reference/SOURCE.md](reference/SOURCE.md). Not ranked against our runs."
                      + (" The evaluated position differs between these rows." if mixed else ""), "",
                      *render_published(mine), ""]
    if speed:
        lines += render_speed(speed)
    lines += frontier or []
    return "\n".join(lines).rstrip("\n") + "\n"


def render_csv(tables: dict[str, dict[Group, list[Row]]]) -> str:
    buffer = io.StringIO()
    intervals = [f"{m}_{part}" for m in METRIC_COLUMNS for part in ("ci_low", "ci_high", "p_vs_best", "seed_sd")]
    columns = ["dataset", "method", "backbone", "swept", *METRIC_COLUMNS, "position", "mask_history",
               "eval_requests", "converged", "data", "training", "seed", "train_s", "samples_per_sec", "device",
               "date", "record", *intervals]
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for dataset, groups in tables.items():
        for group, rows in groups.items():
            for row in rows:
                extra: dict[str, Any] = {}
                for metric, (low, high) in (row.get("ci") or {}).items():
                    extra[f"{metric}_ci_low"], extra[f"{metric}_ci_high"] = round(low, 6), round(high, 6)
                for metric, spread in (row.get("seed_sd") or {}).items():
                    extra[f"{metric}_seed_sd"] = round(spread, 6)
                for metric, p in (row.get("p_vs_best") or {}).items():
                    extra[f"{metric}_p_vs_best"] = None if math.isnan(p) else round(p, 6)
                plain = {key: value for key, value in row.items() if key in columns}
                writer.writerow({"dataset": dataset, "mask_history": group.mask_history,
                                 "eval_requests": group.requests, "converged": group.converged, **plain, **extra})
    return buffer.getvalue()


def render_readme(leaderboard_md: str, plots: list[Path], results_dir: Path) -> str:
    """results/README.md: the current standing with plots, linked relatively."""
    body = leaderboard_md.split("\n", 1)[1]
    lines = ["# recbench results", "",
             "Generated by `bench leaderboard` from the run records in `runs/`, the speed records in "
             "`speed/`, the catalogue-scale records in `scale/`, the benchmark figures in `perf/` and the published "
             "numbers in `reference/`; do not edit by hand.",
             body.rstrip("\n"), ""]
    lines += render_scale(load_scale(results_dir), results_dir)
    lines += render_perf(results_dir)
    if plots:
        lines += ["## Plots", ""]
        for path in plots:
            relative = path.relative_to(results_dir).as_posix()
            lines += [f"![{path.stem}]({relative})", ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def write_leaderboard(results_dir: Path, strict: bool = False) -> WrittenLeaderboard:
    """Write leaderboard.md/.csv, plots/*.png and README.md under results_dir (corrupt records are
    skipped with a warning, or refused when strict)."""
    records = iter_records(results_dir, strict=strict)
    tables = leaderboard_rows(records)
    published = load_reference(results_dir / "reference")
    speed = load_speed(results_dir)
    markdown = render_markdown(tables, published, speed, frontier=render_frontier(records, speed))
    md_path, csv_path = results_dir / "leaderboard.md", results_dir / "leaderboard.csv"
    atomic_write_text(md_path, markdown)
    atomic_write_text(csv_path, render_csv(tables))
    plots = write_plots(records, speed, results_dir / "plots")
    readme = results_dir / "README.md"
    atomic_write_text(readme, render_readme(markdown, plots, results_dir))
    return WrittenLeaderboard(markdown, [md_path, csv_path, *plots, readme])
