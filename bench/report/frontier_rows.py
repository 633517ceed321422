"""Which accuracy rows a speed-accuracy frontier stands on: each method's best main-table row (every test
request, history not masked, training converged) or, on a seeded subsample that a full-data model was scored
on alone (LC-Rec's beam search on 2,000 requests), the others' main-table rows restricted to its requests.

Why a module of its own: choosing rows is about records and per-request ranks, drawing points is about speed
records; bench.report.frontier pairs the two.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.errors import BenchError
from bench.report.formatting import defined
from bench.report.labels import effect_key
from bench.store.request_ranks import load_ranks
from bench.store.results import cut_short

Record = dict[str, Any]


@dataclass(frozen=True)
class Scope:
    """The test requests a frontier's accuracy is measured on: all of them, or one seeded subsample."""

    requests: int | None = None  # None: every test request
    total: int | None = None
    seed: int | None = None

    def title(self) -> str:
        return "" if self.requests is None else f" · seeded subsample of {self.requests:,} of {self.total:,} requests"

    def slug(self) -> str:
        return "" if self.requests is None else f"-sub{self.requests}" + (f"-seed{self.seed}" if self.seed else "")


ALL_REQUESTS = Scope()
# method -> (its row's records, one of them, their mean test NDCG@10 on the scope, taken from a full-test row)
ScopeRows = dict[str, tuple[list[Path], Record, float, bool]]


def converged_test_row(record: Record) -> bool:
    """Test position, history unmasked, training converged, an NDCG@10: what any frontier row must be."""
    return (record.get("eval_target", "test") == "test" and not record.get("mask_history") and not cut_short(record)
            and defined(record.get("metrics", {}).get("ndcg@10")) is not None)


def main_table(record: Record) -> bool:
    """A row a reader takes for the method: a converged test row over every request."""
    return converged_test_row(record) and not record.get("subsample")


def own_subsample_row(record: Record) -> bool:
    """A model trained on all the data and scored on a seeded subsample of the test requests only (LC-Rec's
    beam search): test position, unmasked, converged; a model trained on a subsample is no full-data row
    (the record says so, or, for records whose method did not say, its max_train_users does)."""
    sub = record.get("subsample") or {}
    section = (record.get("config") or {}).get(record.get("method"), {})
    return (converged_test_row(record) and bool(sub) and not sub.get("train") and not section.get("max_train_users")
            and int(sub.get("eval_requests") or 0) < int(sub.get("eval_requests_total") or 0))


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


def test_ranks(path: Path, record: Record) -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
    """The record's per-request ranks where it has a readable test position; None otherwise (the leaderboard's
    tables already warn about a broken file)."""
    try:
        ranks = load_ranks(path, record)
    except BenchError:
        return None
    return ranks if ranks and "test" in ranks else None


def restricted_ndcg(path: Path, record: Record, wanted: np.ndarray) -> float | None:
    """A full-test run's NDCG@10 on the `wanted` requests alone, restricted as the leaderboard's subsample tables
    do (bench.report.tables.restricted); None where it has no per-request ranks of every one of them."""
    from bench.report.tables import record_row, restricted

    ranks = test_ranks(path, record)
    view = None if ranks is None else restricted(record_row(path, {**record, "eval_target": "test"}, ranks), wanted)
    return None if view is None else float(view["ndcg@10"])


def scope_rows(records: list[tuple[Path, Record]], dataset: str, scope: Scope) -> ScopeRows:
    """Each method's row on `scope`: on every request its best main-table row; on a subsample the method's
    best main-table row restricted to its requests (mean over seeds; left out where a run has no per-request
    ranks of them), and for a method without one its best row scored on the subsample itself."""
    full = best_rows(records, dataset)
    if scope == ALL_REQUESTS:
        return {m: (paths, record, mean, False) for m, (paths, record, mean) in full.items()}
    own_records = [(p, r) for p, r in subsample_only(records, dataset) if scope_of(r) == scope]
    rows: ScopeRows = {m: (paths, record, mean, False)
                       for m, (paths, record, mean) in best_rows(own_records, dataset, own_subsample_row).items()}
    scored = next((ranks["test"] for p, r in own_records if (ranks := test_ranks(p, r)) is not None), None)
    if scored is None:
        return rows
    wanted, by_path = np.sort(scored[0]), dict(records)
    for method, (paths, record, _) in full.items():
        values = [v for path in paths if (v := restricted_ndcg(path, by_path.get(path, record), wanted)) is not None]
        if len(values) == len(paths):
            rows[method] = (paths, record, sum(values) / len(values), True)
    return rows


def row_precision(record: Record) -> str | None:
    """The number format an accuracy row's model ran in (bench.report.speed_tables.known_precision)."""
    from bench.report.speed_tables import known_precision

    method = str(record.get("method"))
    return known_precision(record.get("method_info"), (record.get("config") or {}).get(method), method,
                           str(record.get("device", "cpu")))


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
