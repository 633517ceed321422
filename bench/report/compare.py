"""`bench compare A B`: is A better than B on the same requests, by how much, and for how many users?

Both runs must have per-request ranks (records made since they were introduced, or rescored) for the
same position, made on the same split with the same history masking, and the same requests, or one run's
requests among the other's (a subsample run against a full run, which is then taken on the subsample's
requests); the comparison is then paired request by request.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bench.errors import BenchError
from bench.report.significance import P_FLOOR, SIGN_FLIPS, bootstrap_ci, sign_flip_p_values
from bench.runs.metrics import METRIC_NAMES as METRICS
from bench.runs.metrics import per_request_metrics
from bench.store.request_ranks import load_ranks, positions_of
from bench.store.results import iter_records, read_record

# Settings that change what a request's rank means: runs that differ in one are not paired.
SAME_PROTOCOL = {"split_protocol": "leave_one_out", "mask_history": False}
WIN_METRIC = "ndcg@10"  # wins are counted on a metric value, as ranx does: raw ranks beyond the cut-off tie


def resolve_record(spec: str, results_dir: Path, dataset: str | None) -> tuple[Path, dict[str, Any]]:
    """A record file, or a method label (`sasrec`, `cove[cpu,id-only]`) among one dataset's records."""
    path = Path(spec)
    if path.suffix == ".json" and path.exists():
        return path, read_record(path)
    if dataset is None:
        raise BenchError(f"{spec!r} is not a record file; name the dataset too (--dataset) to find it by method")
    from bench.report.labels import method_label

    matches = [(p, r) for p, r in iter_records(results_dir) if r["dataset"] == dataset
               and spec in (r["method"], method_label(r))]
    if len(matches) != 1:
        found = ", ".join(p.name for p, _ in matches) or "none"
        raise BenchError(f"{spec!r} on {dataset}: expected exactly one record, found {found}; pass a record file")
    return matches[0]


def chose_epoch_note(record: dict[str, Any], position: str) -> str | None:
    """The record's own note when its requests at `position` also chose its epoch (the same note the
    leaderboard's data column shows), else None."""
    note = ((record.get("metrics_by_position") or {}).get(position) or {}).get("note") or ""
    return note if "chose the epoch" in note else None


def compare(a: tuple[Path, dict[str, Any]], b: tuple[Path, dict[str, Any]], position: str | None = None) -> dict:
    """Paired comparison of two runs at one position (default: A's reported position)."""
    position = position or a[1].get("eval_target", "test")
    for key, default in SAME_PROTOCOL.items():
        first, second = a[1].get(key, default), b[1].get(key, default)
        if first != second:
            raise BenchError(f"{key} differs: {a[0].name} has {first!r}, {b[0].name} has {second!r}; "
                             "not comparable")
    scored = []
    for path, record in (a, b):
        if record["split_hash"] != a[1]["split_hash"]:
            raise BenchError(f"{path.name}: made on another split than {a[0].name}; not comparable")
        ranks = load_ranks(path, record)
        if ranks is None or position not in ranks:
            raise BenchError(f"{path.name}: no per-request ranks for position {position!r} (`bench rescore` "
                             "adds them to records made before ranks were stored)")
        scored.append(ranks[position])
    (index_a, ranks_a), (index_b, ranks_b) = scored
    restricted = None
    if not np.array_equal(index_a, index_b):
        # A subsample run (BIGRec's 2,000 requests) against a full run: the full run's ranks of those requests.
        if (where := positions_of(index_a, index_b)) is not None:
            ranks_a, restricted = ranks_a[where], {"side": "A", "from": len(index_a), "to": len(index_b)}
        elif (where := positions_of(index_b, index_a)) is not None:
            ranks_b, restricted = ranks_b[where], {"side": "B", "from": len(index_b), "to": len(index_a)}
        else:
            counts = (f"{len(index_a):,} vs {len(index_b):,}" if len(index_a) != len(index_b) else
                      f"{len(index_a):,} each, not the same ones")
            raise BenchError(f"{a[0].name} and {b[0].name} were scored on different requests ({counts}), neither "
                             "within the other's; not a paired comparison")
    values_a = per_request_metrics(ranks_a)
    values_b = per_request_metrics(ranks_b)
    diff = np.stack([values_a[m] - values_b[m] for m in METRICS], axis=1)
    low, high = bootstrap_ci(diff)
    p = sign_flip_p_values(diff)
    win = diff[:, METRICS.index(WIN_METRIC)]
    return {
        "position": position, "requests": int(len(ranks_a)),
        "metrics": {m: {"a": float(values_a[m].mean()), "b": float(values_b[m].mean()),
                        "difference": float(diff[:, j].mean()), "ci": (float(low[j]), float(high[j])),
                        "p": float(p[j])} for j, m in enumerate(METRICS)},
        "wins": {"metric": WIN_METRIC, "a": int((win > 0).sum()), "b": int((win < 0).sum()),
                 "tie": int((win == 0).sum())},
        "restricted": restricted,
        "chose_epoch": {side: note for side, (_, record) in (("A", a), ("B", b))
                        if (note := chose_epoch_note(record, position))},
    }


def render(a_label: str, b_label: str, result: dict) -> list[str]:
    lines = [f"A = {a_label}", f"B = {b_label}",
             f"{result['requests']:,} requests at position {result['position']}, paired request by request"]
    if cut := result.get("restricted"):
        lines.append(f"{cut['side']}: its ranks of these requests, from its {cut['from']:,} per-request ranks "
                     "(the other run scored a seeded subsample; nothing re-run)")
    lines += ["",
             f"{'metric':<9} {'A':>8} {'B':>8} {'A - B':>9} {'95% CI of A - B':>21} {'p':>9}"]
    for metric, m in result["metrics"].items():
        interval = f"[{m['ci'][0]:+.4f}, {m['ci'][1]:+.4f}]"
        p = f"<{P_FLOOR:.2g}" if m["p"] <= P_FLOOR else f"{m['p']:.2g}"
        lines.append(f"{metric:<9} {m['a']:>8.4f} {m['b']:>8.4f} {m['difference']:>+9.4f} {interval:>21} {p:>9}")
    wins = result["wins"]
    lines += ["", f"per-request {wins['metric']}: higher for A on {wins['a']:,} requests, for B on {wins['b']:,}, "
                  f"equal on {wins['tie']:,}",
              "p: two-sided paired randomisation (sign-flip) test, exact or from "
              f"{SIGN_FLIPS:,} seeded sign flips (smallest p then 1/{SIGN_FLIPS + 1:,}); "
              "CI: 1,000 seeded bootstrap resamples"]
    for side, note in result["chose_epoch"].items():
        lines.append(f"note: {side} at position {result['position']}: {note}")
    return lines
