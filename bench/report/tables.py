"""Rows of the comparison tables from run records: grouped so that only rows scored on the same requests
share a table, seeds merged, intervals and paired tests against each column's best."""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from bench.errors import BenchError
from bench.report.formatting import defined
from bench.report.labels import (
    effect_key,
    method_label,
    scoring_speed,
    swept_text,
    train_scope,
    train_seconds,
    training_text,
)
from bench.report.significance import bootstrap_ci, holm, sign_flip_p_values
from bench.report.speed_tables import device_text
from bench.runs.metrics import METRIC_NAMES, per_request_metrics
from bench.store.request_ranks import load_ranks, positions_of
from bench.store.results import cut_short

Record = dict[str, Any]
Row = dict[str, Any]
METRIC_COLUMNS = METRIC_NAMES
POSITION_TEXT = {"test": "last item (test)", "valid": "second-to-last item (valid)"}
SPLIT_POSITION_TEXT = {"test": "test split (global time)", "valid": "validation split (global time)"}


@dataclass(frozen=True)
class Group:
    """Rows in one group were scored on exactly the same requests, so they may be ranked."""

    target: str
    mask_history: bool
    requests: int
    requests_total: int
    protocol: str = "leave_one_out"
    # False: training stopped by a time budget before it converged. Such rows get tables of their own,
    # never ranked beside converged rows (a baseline cut short would make any method look better).
    converged: bool = True

    def sort_key(self) -> tuple:
        return (self.target != "test", self.mask_history, -self.requests, not self.converged)

    def title(self) -> str:
        names = POSITION_TEXT if self.protocol == "leave_one_out" else SPLIT_POSITION_TEXT
        parts = [names.get(self.target, self.target)]
        if self.requests < self.requests_total:
            parts.append(f"seeded subsample of {self.requests:,} of {self.requests_total:,} requests")
        else:
            parts.append(f"all {self.requests:,} requests")
        if self.mask_history:
            parts.append("history items masked (RecBole's protocol: the user's earlier items are never ranked)")
        if not self.converged:
            parts.append("not converged: training stopped by its time budget or on request")
        return " · ".join(parts)

    def slug(self) -> str:
        """Short stable name for file names (plots)."""
        slug = self.target + ("-masked" if self.mask_history else "")
        slug += f"-sub{self.requests}" if self.requests < self.requests_total else ""
        return slug + ("" if self.converged else "-budget")


def record_group(record: Record) -> Group:
    sub = record.get("subsample") or {}
    requests = int(record.get("num_eval_requests") or sub.get("eval_requests") or 0)
    total = int(sub.get("eval_requests_total") or requests)
    return Group(record.get("eval_target", "test"), bool(record.get("mask_history", False)), requests, total,
                 record.get("split_protocol", "leave_one_out"), not cut_short(record))


def record_row(path: Path, record: Record, ranks: dict[str, Any] | None = None) -> Row:
    """One table row; `ranks` (bench.store.request_ranks.load_ranks) adds the per-request values of the row's
    position, which confidence intervals and paired tests need (private keys, never written out)."""
    scored = (ranks or {}).get(record.get("eval_target", "test"))
    values = None
    if scored is not None:
        per_request = per_request_metrics(scored[1], (5, 10, 20))
        values = np.stack([per_request[m] for m in METRIC_COLUMNS], axis=1)
    return {
        "_requests": None if scored is None else scored[0],
        "_values": values,
        "_same_but_seed": effect_key(record),
        "method": method_label(record),
        "backbone": (record.get("method_info") or {}).get("backbone"),
        "swept": swept_text(record),
        **{metric: defined(record["metrics"].get(metric)) for metric in METRIC_COLUMNS},
        "position": record.get("eval_target", "test"),
        "data": train_scope(record) + ("; " + record["position_note"] if record.get("position_note") else ""),
        "training": training_text(record),
        "seed": record.get("seed"),
        "train_s": train_seconds(record),
        "samples_per_sec": scoring_speed(record),
        "device": device_text(record),
        "date": str(record.get("created", ""))[:10],
        "record": f"{record['dataset']}/{path.name}",
    }


def check_split_hashes(records: list[tuple[Path, Record]]) -> None:
    """Refuse to compare records of one dataset made on different splits."""
    by_dataset: dict[str, dict[str, list[str]]] = {}
    for path, record in records:
        by_dataset.setdefault(record["dataset"], {}).setdefault(record["split_hash"], []).append(path.name)
    for dataset, hashes in sorted(by_dataset.items()):
        if len(hashes) > 1:
            listing = ", ".join(f"{h} ({', '.join(sorted(names))})" for h, names in sorted(hashes.items()))
            raise BenchError(f"dataset {dataset!r}: records were made on different splits: {listing}; "
                             "move the stale ones out of results/runs")


def other_positions(record: Record) -> list[Record]:
    """The same trained model scored at other positions (eval.extra_targets) as records of their own,
    so each lands in the table of its position; the data column says it is the same model."""
    views = []
    for target, scored in sorted((record.get("metrics_by_position") or {}).items()):
        # A subsampled run scored the same seeded subsample at every position: keep saying so.
        sub = record.get("subsample")
        views.append({**record, "eval_target": target, "metrics": scored["metrics"],
                      "num_eval_requests": scored["num_eval_requests"],
                      "subsample": None if sub is None else {**sub, "eval_requests": scored["num_eval_requests"]},
                      "position_note": scored.get("note")})
    return views


def leaderboard_rows(records: list[tuple[Path, Record]]) -> dict[str, dict[Group, list[Row]]]:
    """dataset -> comparable group -> rows, best NDCG@10 first; refuses mixed split hashes."""
    check_split_hashes(records)
    tables: dict[str, dict[Group, list[Row]]] = {}
    for path, record in records:
        groups = tables.setdefault(record["dataset"], {})
        try:
            ranks = load_ranks(path, record)
        except BenchError as error:  # the point estimates still stand; only the intervals are lost
            print(f"warning: {error}; no intervals for that row", file=sys.stderr)
            ranks = None
        for view in [record, *other_positions(record)]:
            groups.setdefault(record_group(view), []).append(record_row(path, view, ranks))
    ordered: dict[str, dict[Group, list[Row]]] = {}
    for dataset in sorted(tables):
        groups = tables[dataset]
        add_full_runs_to_subsamples(groups)
        ordered[dataset] = {}
        for group in sorted(groups, key=Group.sort_key):
            ordered[dataset][group] = sorted(
                aggregate_seeds(groups[group]), key=lambda row: (-(row["ndcg@10"] or 0.0), row["method"],
                                                                 row["record"]))
            annotate_significance(ordered[dataset][group])
    return ordered


def restricted(row: Row, requests: np.ndarray) -> Row | None:
    """A full-data row's numbers on `requests` alone, from its per-request values (no re-run); None when it
    has no per-request ranks or did not score every one of those requests."""
    if row["_values"] is None:
        return None
    where = positions_of(row["_requests"], requests)
    if where is None:
        return None
    values = row["_values"][where]
    return {**row, "_requests": requests, "_values": values, "_same_but_seed": row["_same_but_seed"] + "|restricted",
            **{metric: float(values[:, j].mean()) for j, metric in enumerate(METRIC_COLUMNS)},
            "data": f"{row['data']} run, restricted to these requests (its per-request ranks)"}


def add_full_runs_to_subsamples(groups: dict[Group, list[Row]]) -> None:
    """Paired subsample tables: every converged full-data run with per-request ranks joins each converged
    subsample table of its position, restricted to that table's seeded requests, so a method evaluated on a
    subsample (BIGRec's 2,000 requests) is ranked and tested against all the others on exactly its requests.
    Full runs stopped short (a time budget, on request) go to that subsample's own "not converged" table:
    on the same requests, never ranked beside converged rows; that table exists also where the subsample
    run itself was stopped short, which then meets them there."""
    filled: set[Group] = set()  # not-converged subsample tables that already hold the stopped full runs
    for group, rows in list(groups.items()):
        reference = next((row["_requests"] for row in rows if row["_requests"] is not None), None)
        if group.requests >= group.requests_total or reference is None:
            continue
        wanted = np.sort(reference)  # once per table, not once per joining row
        if group.converged:
            full = groups.get(replace(group, requests=group.requests_total), [])
            rows += [view for row in full if (view := restricted(row, wanted)) is not None]
        # A subsample run that did not converge itself (BIGRec stopped on request) meets them here too.
        stopped_here = replace(group, converged=False)
        if stopped_here in filled:
            continue
        short = groups.get(replace(group, requests=group.requests_total, converged=False), [])
        views = [view for row in short if (view := restricted(row, wanted)) is not None]
        if views:
            groups.setdefault(stopped_here, []).extend(views)
            filled.add(stopped_here)


def aggregate_seeds(rows: list[Row]) -> list[Row]:
    """Runs that differ only by seed become one row: metrics averaged, `seed_sd` the standard deviation
    over seeds, the seed column naming how many seeds stand behind it. Where every seed scored the same
    requests, the row's per-request values are their mean over seeds, so it gets an interval and a test."""
    by_config: dict[str, list[Row]] = {}
    for row in rows:
        by_config.setdefault(row["_same_but_seed"], []).append(row)
    out = []
    for runs in by_config.values():
        if len(runs) == 1 or len({row["seed"] for row in runs}) < len(runs):
            out.extend(runs)
            continue
        runs = sorted(runs, key=lambda row: row["seed"])
        paired = all(row["_values"] is not None and np.array_equal(row["_requests"], runs[0]["_requests"])
                     for row in runs)
        merged = {**runs[0], "_requests": runs[0]["_requests"] if paired else None,
                  "_values": np.mean([row["_values"] for row in runs], axis=0) if paired else None,
                  "seed": f"{len(runs)} seeds ({', '.join(str(row['seed']) for row in runs)})",
                  "record": "; ".join(row["record"] for row in runs), "seed_sd": {}}
        for metric in METRIC_COLUMNS:
            values = [row[metric] for row in runs if row[metric] is not None]
            if len(values) == len(runs):
                merged[metric] = float(np.mean(values))
                merged["seed_sd"][metric] = float(np.std(values, ddof=1))
        for key in ("train_s", "samples_per_sec"):
            numbers = [row[key] for row in runs if row[key] is not None]
            merged[key] = float(np.mean(numbers)) if numbers else None
        out.append(merged)
    return out


def annotate_significance(rows: list[Row]) -> None:
    """Each row with per-request values gets `ci` {metric: (low, high)}; every other row of a column is
    tested against the column's best when both have values for the same requests (`p_vs_best` {metric:
    Holm-adjusted p}), else marked `untested` {metric}, so an untestable row is never read as a loser."""
    with_values = [row for row in rows if row["_values"] is not None]
    for row in with_values:
        low, high = bootstrap_ci(row["_values"])
        # An interval without its value would read as a number ("– ±0.09"): none where the value is undefined.
        row["ci"] = {m: (float(low[j]), float(high[j])) for j, m in enumerate(METRIC_COLUMNS) if row[m] is not None}
    tests: list[tuple[str, Row, np.ndarray]] = []  # (metric, row, row - best per request)
    for j, metric in enumerate(METRIC_COLUMNS):
        present = [row for row in rows if row[metric] is not None]
        if len(present) < 2:
            continue
        best = max(present, key=lambda row: row[metric])
        for row in present:
            if row is best:
                continue
            if (best["_values"] is None or row["_values"] is None
                    or not np.array_equal(row["_requests"], best["_requests"])):
                row.setdefault("untested", set()).add(metric)
            else:
                tests.append((metric, row, row["_values"][:, j] - best["_values"][:, j]))
    # One call per request count: the Monte-Carlo columns of a table share one seeded stream of sign flips.
    p = np.empty(len(tests))
    by_length: dict[int, list[int]] = {}
    for i, (_, _, difference) in enumerate(tests):
        by_length.setdefault(len(difference), []).append(i)
    for indices in by_length.values():
        p[indices] = sign_flip_p_values(np.stack([tests[i][2] for i in indices], axis=1))
    for metric in METRIC_COLUMNS:  # Holm within the table, per column
        tested = [(row, float(p[i])) for i, (m, row, _) in enumerate(tests) if m == metric]
        for (row, _), adjusted in zip(tested, holm([q for _, q in tested])):
            row.setdefault("p_vs_best", {})[metric] = adjusted
