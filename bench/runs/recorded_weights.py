"""The trained weights of recorded runs, found and checked for `bench speed --trained / --records` (the
run's work dir is copied before use, so the recorded state is never touched)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.errors import BenchError
from bench.runs.setup import run_work_dir
from bench.store.results import iter_records, read_record


@dataclass(frozen=True)
class RecordedWeights:
    """A recorded run whose trained weights a speed measurement reuses."""

    path: Path
    record: dict[str, Any]
    work_dir: Path | None  # None: the method refits exactly from the data (nothing was saved)

    def describe(self) -> dict[str, Any]:
        metrics = self.record.get("metrics") or {}
        return {"kind": "trained", "record": f"runs/{self.record['dataset']}/{self.path.name}",
                "config_hash": self.record["config_hash"], "train_seconds": self.record.get("train_seconds"),
                "subsample": self.record.get("subsample"), "eval_target": self.record.get("eval_target"),
                "ndcg@10": metrics.get("ndcg@10")}


def recorded_weights(path: Path, method: str, dataset: Any, cache_dir: Path, registry: Any) -> RecordedWeights:
    """Check that `path` is a finished run of `method` on this very split whose weights are still here."""
    if not path.is_file():
        raise BenchError(f"--records {path}: no such record file")
    record = read_record(path)
    if record["method"] != method:
        raise BenchError(f"--records {path}: a {record['method']} run, but it was given for {method}")
    if record["dataset"] != dataset.name or record.get("split_hash") != dataset.split.hash:
        raise BenchError(f"--records {path}: recorded on {record['dataset']} (split {record.get('split_hash')}), "
                         f"not on this {dataset.name} split ({dataset.split.hash})")
    work_dir = run_work_dir(cache_dir, record["dataset"], method, record["config_hash"])
    method_cls = registry.load(method)
    if method_cls.refits_exactly:
        return RecordedWeights(path, record, None)  # refitting gives the recorded model exactly
    if not method_cls.loads_finished_runs:
        raise BenchError(f"--records {path}: {method} cannot promise to only load a finished training "
                         "(Method.loads_finished_runs), so its recorded weights cannot be reused")
    if work_dir.is_dir():
        return RecordedWeights(path, record, work_dir)
    raise BenchError(f"--records {path}: its trained weights ({work_dir}) are gone from this machine")


def find_trained_records(results_dir: Path, dataset: Any, methods: list[str], cache_dir: Path,
                         registry: Any) -> dict[str, RecordedWeights]:
    """For each method, the recorded run on this split with the best recorded NDCG@10 whose weights are
    still here (ties: the newest); methods without one are left out (they get the quick fit). A `bench
    evaluate` re-scoring is its source's model under other scoring switches, never the one timed."""
    def strength(record: dict[str, Any]) -> tuple[float, str]:
        return (record.get("metrics") or {}).get("ndcg@10") or 0.0, record.get("created") or ""

    found: dict[str, RecordedWeights] = {}
    for path, record in iter_records(results_dir):
        method = record.get("method")
        if method not in methods or record.get("dataset") != dataset.name or record.get("weights_from"):
            continue
        try:
            candidate = recorded_weights(path, method, dataset, cache_dir, registry)
        except BenchError:
            continue
        if method not in found or strength(record) > strength(found[method].record):
            found[method] = candidate
    return found
