"""Comparison tables from recorded runs only (results/runs/*/*.json)."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.errors import BenchError
from bench.results import atomic_write_text, iter_records

METRIC_COLUMNS = ("ndcg@5", "ndcg@10", "ndcg@20", "hr@5", "hr@10", "hr@20")


@dataclass
class WrittenLeaderboard:
    markdown_text: str
    paths: list[Path]


def _label(record: dict[str, Any]) -> str:
    info = record.get("method_info", {})
    parts = [record["method"]]
    if info.get("backbone"):
        parts.append(str(info["backbone"]))
    ratio = record.get("config", {}).get(record["method"], {}).get("compression_ratio")
    if ratio is not None:
        parts.append(f"ratio {ratio}")
    return " / ".join(parts)


def _scope(record: dict[str, Any]) -> str:
    sub = record.get("subsample")
    if not sub:
        return "full"
    bits = []
    if sub.get("eval_requests") != sub.get("eval_requests_total"):
        bits.append(f"eval {sub.get('eval_requests')}/{sub.get('eval_requests_total')}")
    if sub.get("train"):
        bits.append("train " + ",".join(f"{k}={v}" for k, v in sorted(sub["train"].items())))
    return "subsample (" + "; ".join(bits) + ")"


def leaderboard_rows(records: list[tuple[Path, dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """Rows per dataset; refuses to mix records made on different splits of one dataset."""
    by_dataset: dict[str, list[tuple[Path, dict[str, Any]]]] = {}
    for path, record in records:
        by_dataset.setdefault(record["dataset"], []).append((path, record))
    tables: dict[str, list[dict[str, Any]]] = {}
    for dataset, entries in sorted(by_dataset.items()):
        hashes = {record["split_hash"]: path for path, record in entries}
        if len(hashes) > 1:
            listing = ", ".join(f"{h} ({p.name})" for h, p in sorted(hashes.items()))
            raise BenchError(f"dataset {dataset!r}: records were made on different splits: {listing}; "
                             "move the stale ones out of results/runs")
        rows = []
        for path, record in entries:
            rows.append({
                "method": _label(record),
                "position": record.get("eval_target", "test"),
                **{metric: record["metrics"].get(metric) for metric in METRIC_COLUMNS},
                "data": _scope(record),
                "train_s": record["train_seconds"],
                "samples_per_sec": record["samples_per_sec"],
                "device": record["device"],
                "date": str(record["created"])[:10],
                "record": path.name,
            })
        rows.sort(key=lambda row: (row["position"], -(row["ndcg@10"] or 0.0), row["record"]))
        tables[dataset] = rows
    return tables


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4f}" if value < 10 else f"{value:.1f}"
    return str(value)


def render_markdown(tables: dict[str, list[dict[str, Any]]]) -> str:
    lines = ["# Leaderboard", "",
             "Full ranking over every item; one relevant item per request; ties count against the target.", ""]
    for dataset, rows in tables.items():
        lines += [f"## {dataset}", ""]
        header = ["method", "position", *METRIC_COLUMNS, "data", "train_s", "samples_per_sec", "device", "date"]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        best = {}
        for metric in METRIC_COLUMNS:
            for position in {row["position"] for row in rows}:
                values = [row[metric] for row in rows if row["position"] == position and row[metric] is not None]
                if values:
                    best[(metric, position)] = max(values)
        for row in rows:
            cells = []
            for column in header:
                text = _fmt(row[column])
                if column in METRIC_COLUMNS and row[column] is not None \
                        and row[column] == best.get((column, row["position"])):
                    text = f"**{text}**"
                cells.append(text)
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def render_csv(tables: dict[str, list[dict[str, Any]]]) -> str:
    buffer = io.StringIO()
    columns = ["dataset", "method", "position", *METRIC_COLUMNS, "data", "train_s", "samples_per_sec",
               "device", "date", "record"]
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for dataset, rows in tables.items():
        for row in rows:
            writer.writerow({"dataset": dataset, **row})
    return buffer.getvalue()


def write_leaderboard(results_dir: Path) -> WrittenLeaderboard:
    tables = leaderboard_rows(iter_records(results_dir))
    markdown = render_markdown(tables)
    md_path, csv_path = results_dir / "leaderboard.md", results_dir / "leaderboard.csv"
    atomic_write_text(md_path, markdown)
    atomic_write_text(csv_path, render_csv(tables))
    return WrittenLeaderboard(markdown, [md_path, csv_path])
