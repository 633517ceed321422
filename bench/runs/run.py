"""One run = one method on one dataset's shared split, evaluated and recorded."""

from __future__ import annotations

import contextlib
import copy
import random
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.config import config_hash, load_config, method_config, section_neutral
from bench.data.types import Dataset, EvalCases
from bench.errors import BenchError
from bench.registry import configured_registry
from bench.runs.eval_progress import EvalProgress, clear_progress, load_progress, progress_path, requests_fingerprint
from bench.runs.identity import backbone_identity, run_identity
from bench.runs.setup import run_work_dir, set_up
from bench.runs.validate import check_settings, setting_warnings
from bench.store.request_ranks import save_ranks
from bench.store.results import (
    check_writable,
    git_revision,
    now_iso,
    package_versions,
    read_record,
    record_path,
    save_record,
    training_summary,
)
from bench.train.lifecycle import request_finish
from bench.train.locks import training_slot, work_dir_lock
from bench.train.resources import set_torch_threads

# Evaluation subsamples use a fixed seed, so every method is scored on the same users.
EVAL_SUBSAMPLE_SEED = 0


PER_REQUEST_KEY = "_per_request_ranks"


def subsample_indices(count: int, max_users: int) -> list[int]:
    """Indices of a seeded subsample of `count` requests (all when max_users is 0 or covers everything)."""
    if max_users <= 0 or max_users >= count:
        return list(range(count))
    return sorted(random.Random(EVAL_SUBSAMPLE_SEED).sample(range(count), max_users))


def subsample_cases(cases: EvalCases, max_users: int) -> EvalCases:
    """A seeded subsample of requests (all when max_users is 0 or covers everything)."""
    chosen = subsample_indices(len(cases), max_users)
    return cases if len(chosen) == len(cases) else cases.subset(chosen)


def eval_settings(effective: dict[str, Any], method: str) -> dict[str, Any]:
    """The evaluation options of a run; a method section's max_eval_users wins over [eval]."""
    settings = dict(effective["eval"])
    own = effective[method].get("max_eval_users")
    if own:
        settings["max_eval_users"] = int(own)
    settings.setdefault("max_eval_users", 0)
    if settings.get("target", "test") not in ("test", "valid"):
        raise BenchError(f"eval.target must be 'test' or 'valid', got {settings['target']!r}")
    return settings


def checked_config(
    config: dict[str, Any], method: str, *, overrides: list[str] | tuple[str, ...] = (), preset: str | None = None,
    model: str | None = None, device: str = "cpu", seed: int = 0, max_train_minutes: float | None = None,
) -> dict[str, Any]:
    """The effective config of one run with every setting checked, before any data is read: `sweep`,
    `--seeds` and `baselines` check all their runs with it before the first one starts."""
    registry = configured_registry(config)
    registry.target(method)  # unknown names fail before any data is read
    effective = build_effective_config(config, method, preset, list(overrides), model)
    check_settings(registry.load(method), config, method, preset, effective, device, max_train_minutes, seed)
    return effective


def all_eval_users_as_zero(effective: dict[str, Any], method: str, dataset: Dataset) -> dict[str, Any]:
    """A max_eval_users (in [eval] or the method's own section) at or above every request count it would
    subsample means all requests, as 0 does: written as 0, so the same work has one config hash and one
    record, not one per number that happens to exceed the data."""
    from bench.data.split import selection_split

    settings = eval_settings(effective, method)
    limit = int(settings["max_eval_users"])
    positions = {settings.get("target", "test"), *(settings.get("extra_targets") or [])}
    counts = [len(dataset.split.cases(position)) for position in positions]
    if not settings.get("max_valid_users"):  # selection requests fall back to the same subsample
        counts.append(len(selection_split(dataset.split, settings.get("target", "test"))[0].valid))
    if not limit or limit < max(counts):
        return effective
    normalised = copy.deepcopy(effective)
    for section in ("eval", method):  # the method's own key wins over [eval]'s, so both become 0
        if normalised[section].get("max_eval_users"):
            normalised[section]["max_eval_users"] = 0
    return normalised


def build_effective_config(
    config: dict[str, Any], method: str, preset: str | None, overrides: list[str], model: str | None
) -> dict[str, Any]:
    overrides = list(overrides)
    if model is not None:
        if "model" not in config.get(method, {}):
            raise BenchError(f"--model: method {method!r} has no backbone model to set")
        overrides.append(f"{method}.model={model!r}" if not model.startswith(("'", '"')) else f"{method}.model={model}")
    return method_config(config, method, preset, overrides)


@dataclass
class RunOutcome:
    record: dict[str, Any]
    path: Path
    reused: bool


def run(
    method: str,
    dataset_name: str,
    *,
    overrides: list[str] | tuple[str, ...] = (),
    preset: str | None = None,
    model: str | None = None,
    device: str = "cpu",
    seed: int = 0,
    force: bool = False,
    max_train_minutes: float | None = None,
    results_dir: Path | None = None,
    config: dict[str, Any] | None = None,
    progress: bool = True,
    log: Any = print,
    threads: int | None = None,
    dry_run: bool = False, parallel: bool = False,
    allow_count_mismatch: bool = False, finish: bool = False,
) -> RunOutcome:
    """Train (or reuse) and evaluate one method; write its record atomically.

    `threads` sets torch's CPU threads (recorded under `hardware`; not hashed: it changes speed, not results).
    `dry_run` resolves the config and its record path and returns (the record if one exists, else {}),
    computing nothing. A run waits for any other training under the same cache folder unless `parallel`
    (recorded as `exclusive: false`). `finish`: bench.train.lifecycle.request_finish.
    """
    from bench.train.distributed import barrier, init, is_main, local_device, world

    config = config if config is not None else load_config()
    set_torch_threads(threads)
    effective = checked_config(config, method, overrides=overrides, preset=preset, model=model, device=device,
                               seed=seed, max_train_minutes=max_train_minutes)
    setup = set_up(dataset_name, config, results_dir, device)
    registry = setup.registry
    world_size = world()[1]
    if world_size > 1 and not registry.load(method).data_parallel:
        raise BenchError(f"{method}: no data-parallel training here; run it as one process (without torchrun). "
                         "Data-parallel methods: the ones whose class sets data_parallel = True")
    paths = setup.paths
    if not dry_run:
        check_writable(paths.results_dir / "runs", paths.cache_dir)
    dataset, info = setup.prepare()
    card = setup.card_record(info, allow_count_mismatch)
    effective = all_eval_users_as_zero(effective, method, dataset)
    settings = eval_settings(effective, method)
    if not dry_run and is_main():
        for warning in setting_warnings(effective, method, dataset.num_items):
            print(warning, file=sys.stderr)
    budget = float(max_train_minutes) if max_train_minutes else None
    backbone = backbone_identity(effective[method])
    hash_ = config_hash(run_identity(config, effective, method, dataset, seed=seed, device=device, budget=budget,
                                     world_size=world_size, backbone=backbone))
    path = record_path(paths.results_dir, dataset.name, method, hash_)
    if path.exists() and not force:
        try:
            return RunOutcome(read_record(path), path, reused=True)
        except BenchError as error:  # unreadable: not a result; keep the bytes aside and run again
            if not dry_run:
                aside = path.with_name(path.name + ".corrupt")
                path.replace(aside)
                log(f"warning: {error}; moved it to {aside} and running again")
    if dry_run:  # nothing recorded yet: say where the record would go, compute nothing
        return RunOutcome({}, path, reused=False)
    work_dir = run_work_dir(paths.cache_dir, dataset.name, method, hash_)
    if finish and is_main():
        request_finish(work_dir, path)
    backend = init(device)
    main = is_main()  # under torchrun only rank 0 locks, clears and writes; every rank trains and scores
    with work_dir_lock(work_dir) if main else contextlib.nullcontext():
        if path.exists() and not force:  # an identical run finished while we waited for data
            return RunOutcome(read_record(path), path, reused=True)
        if force and work_dir.exists() and main:
            # --force means a fresh training: a finished checkpoint here would be resumed with 0 epochs.
            shutil.rmtree(work_dir)
        barrier()
        slot = (contextlib.nullcontext() if parallel else  # every rank waits with rank 0 (see training_slot)
                training_slot(paths.cache_dir, f"bench run --method {method} --dataset {dataset.name}", log,
                              holder=main))
        try:
            with slot:
                record = train_and_evaluate(registry.load(method), method, dataset, info, effective, settings,
                                            device=local_device(device), seed=seed, work_dir=work_dir,
                                            cache_dir=paths.cache_dir,
                                            budget=budget, progress=progress and main, log=log if main else _quiet,
                                            hash_neutral=section_neutral(config, method))
        except Exception:
            # A failed run leaves no empty folder behind (an interrupted one keeps its checkpoints).
            if work_dir.exists() and not any(work_dir.iterdir()):
                work_dir.rmdir()
            raise
    record.update(config=effective, config_hash=hash_, seed=seed, device=device, max_train_minutes=budget,
                  model_identity=backbone, exclusive=not parallel, dataset_card=card)
    if not card["tracked_by_git"]:
        record["git_rev"] = f"{record['git_rev']}+untracked-card"
    if world_size > 1:
        from bench.train.distributed import gather
        from bench.train.resources import hardware_info

        record["distributed"] = {"world_size": world_size, "backend": backend,
                                 "launcher": "torchrun/accelerate (RANK, WORLD_SIZE from the environment)",
                                 "hardware_per_rank": gather(hardware_info(local_device(device)))}
    per_request = record.pop(PER_REQUEST_KEY)
    if not main:  # the same record exists on every rank; rank 0 writes it
        return RunOutcome(record, path, reused=False)
    try:
        record["ranks"] = save_ranks(path, per_request)
    except OSError as error:  # the metrics still count; only the per-request file is lost
        log(f"warning: per-request ranks not written beside {path} ({error.strerror})")
        record["ranks"] = None
    saved = save_record(path, record, paths.cache_dir, log)
    if record["ranks"] is not None:  # the ranks now live beside the record
        clear_progress(work_dir)
    return RunOutcome(record, saved, reused=False)


def _quiet(message: str) -> None:
    """Log lines of ranks other than 0 (they would repeat rank 0's)."""


def training_totals(described: dict[str, Any], this_call: float) -> dict[str, Any]:
    """Training seconds over every call that trained this run, and how many calls: a resumed run's own
    `train_seconds` is only its last call's stopwatch, which undersells what the run cost. Taken from
    what the method reports (CoVE's cumulative seconds, the epoch loop's calls and per-epoch seconds);
    a run that says it did not resume is one call of `this_call` seconds; else null (not known)."""
    summary = training_summary({"method_info": described})
    resumed, calls, total = summary["resumed"], described.get("training_calls"), summary["train_seconds_all_calls"]
    if not resumed:  # one call trained all of it: its stopwatch is the whole cost (setup included)
        return {"train_seconds_total": this_call, "training_calls": 1 if calls in (None, 1) else calls}
    return {"train_seconds_total": round(total, 3) if total is not None else None, "training_calls": calls}


def train_and_evaluate(
    method_cls: Any,
    method: str,
    dataset: Dataset,
    info: dict[str, Any],
    effective: dict[str, Any],
    settings: dict[str, Any],
    *,
    device: str,
    seed: int,
    work_dir: Path,
    cache_dir: Path,
    budget: float | None,
    progress: bool,
    log: Any,
    resume_only: bool = False,
    chosen_on: int | None = None,
    hash_neutral: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Fit (or, with `resume_only`, load) one method, rank every request of its target (and extra targets),
    and return the record's body. `chosen_on`: validation requests that chose the epoch when that choice was
    made elsewhere (bench evaluate: the source run's). `hash_neutral`: the method's [hash_neutral] keys
    (bench.config.section_neutral), which its work dir's key leaves out at their neutral values."""
    from dataclasses import replace

    from bench.data.split import selection_split
    from bench.method import RunContext, seed_everything
    from bench.runs.evaluate import evaluate
    from bench.train.resources import Stopwatch, hardware_info, load_average, peak_memory_mb, reset_peak_memory

    ks = tuple(int(k) for k in settings.get("ks", (5, 10, 20)))
    target = settings.get("target", "test")
    max_users = int(settings.get("max_eval_users", 0))
    fit_split, selection_text = selection_split(dataset.split, target)
    fit_dataset = replace(dataset, split=fit_split)
    valid_cases = subsample_cases(fit_split.valid, int(settings.get("max_valid_users") or 0) or max_users)
    eval_indices = subsample_indices(len(dataset.split.cases(target)), max_users)
    eval_cases = subsample_cases(dataset.split.cases(target), max_users)
    batch_size = int(effective[method].get("eval_batch_size", settings.get("batch_size", 256)))
    mask_history = bool(settings.get("mask_history", False))
    validations = []

    def validate(model: Any) -> float:
        validations.append(1)
        result = evaluate(model, valid_cases, dataset.num_items, ks=(10,), batch_size=batch_size,
                          mask_history=mask_history, device=device, progress=progress, desc="validate",
                          measure_memory=False)
        return result.metrics["ndcg@10"]

    work_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(seed)
    context = RunContext(device=device, seed=seed, work_dir=work_dir, cache_dir=cache_dir, max_train_minutes=budget,
                         validate=validate, log=log, resume_only=resume_only, hash_neutral=dict(hash_neutral or {}))
    instance = method_cls(effective[method], context)
    revision = git_revision()  # the code this run executes, even if the tree changes while it trains
    train_watch = Stopwatch(device)
    load_before = load_average()
    started = time.time()
    train_window = reset_peak_memory(device)
    with train_watch.running():
        instance.fit(fit_dataset)
    train_peak, _ = peak_memory_mb(device, since_reset=train_window)

    def resumable(position: str, cases: EvalCases) -> EvalProgress:
        return load_progress(progress_path(work_dir, position),
                             requests_fingerprint(cases, effective, mask_history, work_dir))

    result = evaluate(instance, eval_cases, dataset.num_items, ks=ks, batch_size=batch_size, mask_history=mask_history,
                      device=device, progress=progress, desc=f"evaluate {target}",
                      resume=resumable(target, eval_cases), log=log)
    by_position = {}
    per_request = {target: (np.asarray(eval_indices), result.ranks)}
    for extra in settings.get("extra_targets") or []:
        if extra == target:
            continue
        extra_cases = subsample_cases(dataset.split.cases(extra), max_users)
        scored = evaluate(instance, extra_cases, dataset.num_items, ks=ks, batch_size=batch_size,
                          mask_history=mask_history, device=device, progress=progress, desc=f"evaluate {extra}",
                          resume=resumable(extra, extra_cases), log=log)
        per_request[extra] = (np.asarray(subsample_indices(len(dataset.split.cases(extra)), max_users)), scored.ranks)
        by_position[extra] = {"metrics": scored.metrics, "num_eval_requests": scored.num_cases}
    described = instance.describe()
    # How many validation requests chose the epoch: the harness's validator's, a method's own selection
    # (BIGRec's validation loss), or, for weights loaded from another run, that run's (`chosen_on`).
    if chosen_on is None:
        chosen_on = len(valid_cases) if validations else int(described.get("valid_loss_examples") or 0)
    for extra, scored_extra in by_position.items():
        chose = extra == "valid" and target == "test" and chosen_on > 0
        scored_extra["note"] = "same trained model; " + (
            f"{chosen_on} seeded requests of this position also chose the epoch (optimistic)" if chose
            else "these requests took no part in training or selection")
    train_subsample = described.pop("train_subsample", None)
    subsample = None
    if len(eval_cases) < len(dataset.split.cases(target)) or train_subsample:
        subsample = {"eval_requests": len(eval_cases), "eval_requests_total": len(dataset.split.cases(target)),
                     "eval_seed": EVAL_SUBSAMPLE_SEED, "train": train_subsample}
    return {
        "schema": 1,
        "method": method,
        "dataset": dataset.name,
        "split_hash": dataset.split.hash,
        "catalogue_hash": dataset.catalogue.hash,
        "split_protocol": dataset.split.protocol,
        "eval_target": target,
        "mask_history": mask_history,
        "metrics": result.metrics,
        "metrics_by_position": by_position or None,
        "num_eval_requests": result.num_cases,
        "num_valid_requests": len(valid_cases),
        "selection": {"requests": selection_text, "num_requests": len(valid_cases)},
        "train_seconds": round(train_watch.seconds, 3),
        **training_totals(described, round(train_watch.seconds, 3)),
        "eval_seconds": round(result.seconds, 3),
        "eval_calls": result.calls,
        "eval_calls_detail": result.calls_detail,
        "wall_seconds": round(time.time() - started, 3),
        "samples_per_sec": round(result.samples_per_sec, 3),
        "peak_memory_mb": round(result.peak_memory_mb, 1),
        "peak_memory_kind": result.peak_memory_kind,
        "train_peak_memory_mb": round(train_peak, 1),
        "hardware": {**hardware_info(device), "load_average_1min": {"before": load_before, "after": load_average()}},
        "subsample": subsample,
        "method_info": described,
        "dataset_info": {key: info.get(key) for key in ("users", "items", "interactions", "title_kind",
                                                        "source_format", "content_hash", "short_users_dropped")},
        "versions": package_versions(),
        "git_rev": revision,
        "created": now_iso(),
        PER_REQUEST_KEY: per_request,  # written beside the record by run(), never into it
    }
