"""`bench demo`'s table: the strongest converged row of each [demo] method.

The demo's own runs are cheap stand-ins (40-minute budgets, 256-user subsamples); a reader of the table
wants each method at its best comparable record. A run a time budget stopped before it converged is never
a row (a baseline cut short makes every other method look better): a method with only such runs is named
under the table, its rows are in the leaderboard's "not converged" tables. Subsample rows that cannot be
told apart from popularity say nothing about a method, so they stay in the leaderboard only.
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass, field
from typing import Any

from bench.report.formatting import fmt_number
from bench.report.labels import epochs_done, method_label, scoring_speed, train_seconds
from bench.store.results import cut_short, training_summary

Record = dict[str, Any]
Z95 = 1.959964  # two-sided 95 %


def stopped_by(record: Record) -> str | None:
    return training_summary(record)["stopped_by"]


def epochs_text(record: Record) -> str:
    summary = training_summary(record)
    most = summary["epochs_max"]
    if summary["epochs_run"] is None:
        return ""
    done, _ = epochs_done(record)
    return f"{done}/{most} ep" if most is not None else f"{done} ep"


def training_text(record: Record) -> str:
    """How training ended, short enough for the demo's training column; a budget cut is marked `CUT`."""
    epochs = epochs_text(record)
    if cut_short(record):
        minutes = record.get("max_train_minutes") or (record.get("method_info") or {}).get("max_train_minutes")
        budget = "on request" if stopped_by(record) == "finish_requested" else f"{minutes:g} min" if minutes \
            else "budget"
        return f"CUT {budget}, {epochs}".rstrip(", ")
    endings = {"early_stopping": "early stop", "patience": "early stop", "epochs": "max epochs"}
    why = endings.get(stopped_by(record) or "")
    return ", ".join(part for part in (why, epochs) if part) or "–"


def hr10_lower_bound(record: Record) -> float:
    """Wilson 95 % lower bound of HR@10 over the record's requests."""
    n = int(record.get("num_eval_requests") or 0)
    if n == 0:
        return 0.0
    p = round(record["metrics"].get("hr@10", 0.0) * n) / n
    z2 = Z95 * Z95
    centre = p + z2 / (2 * n)
    spread = Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, (centre - spread) / (1 + z2 / n))


def comparable(record: Record, reference: Record) -> bool:
    """Same data, split, scored position and masking: rows a reader may rank against each other."""
    return all(record.get(key) == reference.get(key)
               for key in ("dataset", "split_hash", "eval_target", "mask_history"))


@dataclass
class DemoTable:
    rows: list[Record]
    replaced: list[tuple[Record, Record]] = field(default_factory=list)  # (demo run, the row shown instead)
    left_out: list[Record] = field(default_factory=list)  # subsample rows not distinguishable from pop
    not_converged: list[Record] = field(default_factory=list)  # methods whose every full-data run was cut


def choose_rows(demo_records: list[Record], all_records: list[Record], floor: str | None = None) -> DemoTable:
    """Per [demo] method: its strongest converged full-data record among the comparable ones (a method with
    budget-cut runs only is listed as not converged); the demo's subsample runs only when their HR@10 is
    significantly above the `floor` method's ([demo] floor in bench.toml: popularity), or always where there
    is no floor."""
    if not demo_records:
        return DemoTable([])
    reference = demo_records[0]
    pool = [r for r in all_records if comparable(r, reference) and r.get("metrics")]
    methods = list(dict.fromkeys(r["method"] for r in demo_records))
    rows: list[Record] = []
    cut: list[Record] = []
    for method in methods:
        full = [r for r in pool if r["method"] == method and not r.get("subsample")]
        # A bench-evaluate re-scoring of a run's weights is that run's model, not a stronger one.
        full = [r for r in full if not r.get("weights_from")] or full
        converged = [r for r in full if not cut_short(r)]
        if converged or full:
            best = max(converged or full, key=lambda r: r["metrics"].get("ndcg@10", 0.0))
            (rows if converged else cut).append(best)
    pop = next((r for r in rows if r["method"] == floor), None)
    table = DemoTable(rows, not_converged=cut)
    for record in demo_records:
        if record.get("subsample"):
            if pop is None or hr10_lower_bound(record) > pop["metrics"].get("hr@10", 0.0):
                rows.append(record)
            else:
                table.left_out.append(record)
        elif not any(record is row or record.get("config_hash") == row.get("config_hash") for row in rows + cut):
            shown = next((r for r in rows if r["method"] == record["method"]), None)
            if shown is not None:
                table.replaced.append((record, shown))
    rows.sort(key=lambda r: -r["metrics"].get("ndcg@10", 0.0))
    return table


def data_text(record: Record) -> str:
    sub = record.get("subsample") or {}
    if sub.get("eval_requests"):
        return f"{sub['eval_requests']:,}/{sub['eval_requests_total']:,} req"
    return "train subsample" if sub.get("train") else "full"


def render_demo(table: DemoTable) -> list[str]:
    """The demo's table, one line per row (under 100 characters), and what was replaced or left out."""
    lines = [f"{'method':<21} {'data':<18} {'NDCG@10':>8} {'HR@10':>7} {'training':<21} {'train s':>9} "
             f"{'samples/s':>9}"]
    for record in table.rows:
        metrics = record["metrics"]
        lines.append(f"{method_label(record)[:21]:<21} {data_text(record)[:18]:<18} {metrics.get('ndcg@10', 0):>8.4f} "
                     f"{metrics.get('hr@10', 0):>7.4f} {training_text(record)[:21]:<21} "
                     f"{fmt_number(train_seconds(record)):>9} {fmt_number(scoring_speed(record)):>9}")
    if table.not_converged:
        names = ", ".join(f"{method_label(r)} ({training_text(r)})" for r in table.not_converged)
        lines.append(f"Not converged, so not shown (no run of theirs ended by early stopping or its epochs; in "
                     f"the leaderboard's not-converged tables): {names}.")
    for demo_run, shown in table.replaced:
        lines.append(f"{method_label(demo_run)}: the demo's run ({training_text(demo_run)}, NDCG@10 "
                     f"{demo_run['metrics'].get('ndcg@10', 0):.4f}) is shown by the converged record "
                     f"{shown.get('config_hash')}.")
    if table.left_out:
        names = ", ".join(f"{method_label(r)} on {r.get('num_eval_requests')} req" for r in table.left_out)
        lines.append(f"Not shown (HR@10 not significantly above pop's; in the leaderboard): {names}.")
    return [part for line in lines for part in (textwrap.wrap(line, 100) or [""])]
