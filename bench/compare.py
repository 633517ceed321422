"""`bench compare A B`: is A better than B on the same requests, by how much, and for how many users?

Both runs must have per-request ranks (records made since they were introduced, or rescored) for the
same position and the same requests; the comparison is then paired request by request.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bench.errors import BenchError
from bench.metrics import METRIC_NAMES as METRICS
from bench.metrics import per_request_metrics
from bench.request_ranks import load_ranks
from bench.results import iter_records, read_record
from bench.significance import bootstrap_ci, paired_p_values


def resolve_record(spec: str, results_dir: Path, dataset: str | None) -> tuple[Path, dict[str, Any]]:
    """A record file, or a method label (`sasrec`, `cove[cpu,id-only]`) among one dataset's records."""
    path = Path(spec)
    if path.suffix == ".json" and path.exists():
        return path, read_record(path)
    if dataset is None:
        raise BenchError(f"{spec!r} is not a record file; name the dataset too (--dataset) to find it by method")
    from bench.leaderboard import method_label

    matches = [(p, r) for p, r in iter_records(results_dir) if r["dataset"] == dataset
               and spec in (r["method"], method_label(r))]
    if len(matches) != 1:
        found = ", ".join(p.name for p, _ in matches) or "none"
        raise BenchError(f"{spec!r} on {dataset}: expected exactly one record, found {found}; pass a record file")
    return matches[0]


def compare(a: tuple[Path, dict[str, Any]], b: tuple[Path, dict[str, Any]], position: str | None = None) -> dict:
    """Paired comparison of two runs at one position (default: A's reported position)."""
    position = position or a[1].get("eval_target", "test")
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
    if not np.array_equal(index_a, index_b):
        raise BenchError(f"{a[0].name} and {b[0].name} were scored on different requests "
                         f"({len(index_a)} vs {len(index_b)}); not a paired comparison")
    values_a = per_request_metrics(ranks_a)
    values_b = per_request_metrics(ranks_b)
    diff = np.stack([values_a[m] - values_b[m] for m in METRICS], axis=1)
    low, high = bootstrap_ci(diff)
    p = paired_p_values(np.stack([values_a[m] for m in METRICS], 1), np.stack([values_b[m] for m in METRICS], 1))
    return {
        "position": position, "requests": int(len(ranks_a)),
        "metrics": {m: {"a": float(values_a[m].mean()), "b": float(values_b[m].mean()),
                        "difference": float(diff[:, j].mean()), "ci": (float(low[j]), float(high[j])),
                        "p": float(p[j])} for j, m in enumerate(METRICS)},
        "a_ranks_better": int((ranks_a < ranks_b).sum()), "b_ranks_better": int((ranks_b < ranks_a).sum()),
        "same_rank": int((ranks_a == ranks_b).sum()),
    }


def render(a_label: str, b_label: str, result: dict) -> list[str]:
    lines = [f"A = {a_label}", f"B = {b_label}",
             f"{result['requests']:,} requests at position {result['position']}, paired request by request", "",
             f"{'metric':<9} {'A':>8} {'B':>8} {'A - B':>9} {'95% CI of A - B':>21} {'p':>8}"]
    for metric, m in result["metrics"].items():
        interval = f"[{m['ci'][0]:+.4f}, {m['ci'][1]:+.4f}]"
        lines.append(f"{metric:<9} {m['a']:>8.4f} {m['b']:>8.4f} {m['difference']:>+9.4f} {interval:>21} "
                     f"{m['p']:>8.2g}")
    lines += ["", f"target ranked higher by A on {result['a_ranks_better']:,} requests, by B on "
                  f"{result['b_ranks_better']:,}, the same on {result['same_rank']:,}",
              "p: two-sided paired t-test (normal approximation); CI: 1,000 seeded bootstrap resamples"]
    return lines
