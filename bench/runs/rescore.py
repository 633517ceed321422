"""`bench rescore`: give a record made before per-request ranks were stored its ranks, honestly.

The run's own trained weights are reloaded from its work dir (a finished training resumes with nothing
left to do), every recorded position is scored again, and the ranks are attached only if they
reproduce the recorded metrics exactly; otherwise nothing is changed and the mismatch is reported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.errors import BenchError

TOLERANCE = 1e-9


def rescore(path: Path, record: dict[str, Any], config: dict[str, Any], log: Any = print) -> dict[str, Any]:
    """Returns the updated record (also written); raises BenchError when it cannot be done honestly."""
    from bench.config import section_neutral
    from bench.runs.run import PER_REQUEST_KEY, eval_settings, train_and_evaluate
    from bench.runs.setup import run_work_dir, set_up
    from bench.store.request_ranks import save_ranks
    from bench.store.results import git_revision, now_iso, write_record
    from bench.train.locks import work_dir_lock

    if record.get("ranks"):
        return record
    setup = set_up(record["dataset"], config)
    method, paths, registry = record["method"], setup.paths, setup.registry
    work_dir = run_work_dir(paths.cache_dir, record["dataset"], method, record["config_hash"])
    if not work_dir.exists() and not registry.load(method).refits_exactly:
        raise BenchError(f"{path.name}: its trained weights ({work_dir}) are gone; only a new run "
                         "(bench run --force) can give it per-request ranks")
    dataset, info = setup.prepare()
    if dataset.split.hash != record["split_hash"]:
        raise BenchError(f"{path.name}: the dataset's split changed since the run; not rescorable")
    effective = record["config"]
    with work_dir_lock(work_dir):
        again = train_and_evaluate(registry.load(method), method, dataset, info, effective,
                                   eval_settings(effective, method), device=record.get("device", "cpu"),
                                   seed=record.get("seed", 0), work_dir=work_dir,
                                   cache_dir=paths.cache_dir,
                                   budget=record.get("max_train_minutes"), progress=True, log=log,
                                   # A method that can promise to only load does (a retraining would be caught
                                   # below, but only after it ran); the others rely on that check.
                                   resume_only=registry.load(method).loads_finished_runs,
                                   hash_neutral=section_neutral(config, method))
    recorded = {record.get("eval_target", "test"): record["metrics"],
                **{p: v["metrics"] for p, v in (record.get("metrics_by_position") or {}).items()}}
    found = {again.get("eval_target", "test"): again["metrics"],
             **{p: v["metrics"] for p, v in (again.get("metrics_by_position") or {}).items()}}
    for position, metrics in recorded.items():
        for name, value in metrics.items():
            if abs(found.get(position, {}).get(name, float("nan")) - value) > TOLERANCE:
                raise BenchError(f"{path.name}: scored again, {position} {name} = "
                                 f"{found.get(position, {}).get(name)} but the record says {value}: these are not "
                                 "the recorded weights; record left unchanged")
    record = {**record, "ranks": save_ranks(path, again[PER_REQUEST_KEY]),
              "ranks_added": {"by": "bench rescore", "date": now_iso(), "git_rev": git_revision(),
                              "check": "every recorded metric reproduced exactly from the re-scored ranks"}}
    write_record(path, record)
    return record
