"""`bench evaluate`: a recorded run's own trained weights scored again under other evaluation options,
recorded as a run of its own that names the weights it reused.

Published numbers are often measured under another protocol than ours (RecBole masks every item of the
user's history before ranking; the transformer benchmark too), so comparing with them needs the same
trained model evaluated both ways, not a second training. Only options that leave training and epoch
selection untouched may change (the [eval] keys below, and a method's own `evaluation_keys`, e.g. BIGRec's
grounding gamma); the new record keeps the source's training facts and says that its epoch
was chosen under the source's options.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

from bench.config import apply_override, config_hash, section_neutral
from bench.errors import BenchError, shown

# [eval] keys that change how a trained model is scored, never how it was trained or which epoch was kept.
# (target would change the training split; max_eval_users and max_valid_users the selection requests.)
REEVALUABLE_KEYS = ("mask_history", "extra_targets", "ks", "batch_size")


def evaluation_changes(record: dict[str, Any], overrides: list[str], source: str,
                       method_keys: tuple[str, ...] = (), shortcuts: tuple[str, ...] = ()) -> dict[str, Any]:
    """The record's effective config with `overrides` applied; each must be `eval.<key>` of REEVALUABLE_KEYS
    or `<method>.<key>` of the method's `evaluation_keys`, and the result must differ from the record's in
    more than `shortcuts` (keys that skip work without changing a score, Method.timing_overrides)."""
    if not overrides:
        raise BenchError(f"{source}: give the evaluation options to change, e.g. --set eval.mask_history=true")
    effective = copy.deepcopy(record.get("config") or {})
    if not isinstance(effective.get("eval"), dict):
        raise BenchError(f"{source}: the record has no [eval] config; it cannot be evaluated again")
    method = record["method"]
    allowed = [f"eval.{k}" for k in REEVALUABLE_KEYS] + [f"{method}.{k}" for k in method_keys]
    for assignment in overrides:
        key = assignment.partition("=")[0].strip()
        section, _, leaf = key.partition(".")
        if key not in allowed:
            raise BenchError(f"--set {shown(assignment)}: bench evaluate changes only {', '.join(allowed)} "
                             "(anything else changes training or the epoch chosen: use bench run)")
        effective.setdefault(section, {}).setdefault(leaf, None)  # a key added after the record was made
        apply_override({section: effective[section]}, assignment)
    def scored(config: dict[str, Any], section: str) -> Any:
        values = config.get(section)
        if section == method and isinstance(values, dict):
            return {k: v for k, v in values.items() if k not in shortcuts}
        return values

    if all(scored(effective, s) == scored(record["config"], s) for s in ("eval", method)):
        raise BenchError(f"{source}: --set changes nothing the record was not already evaluated with"
                         + (f" ({', '.join(shortcuts)} only skips work)" if shortcuts else ""))
    return effective


def reevaluate(path: Path, overrides: list[str], config: dict[str, Any], *, results_dir: Path | None = None,
               force: bool = False, parallel: bool = False, log: Any = print) -> Any:
    """Score the weights of the record at `path` with `overrides`; returns a bench.runs.run.RunOutcome.
    Waits for other training under the same cache unless `parallel`, so its samples/s are its own."""
    import contextlib

    from bench.runs.eval_progress import PATTERN, clear_progress
    from bench.runs.identity import run_identity
    from bench.runs.recorded_weights import recorded_weights
    from bench.runs.run import (
        PER_REQUEST_KEY,
        RunOutcome,
        eval_settings,
        train_and_evaluate,
    )
    from bench.runs.setup import run_work_dir, set_up
    from bench.runs.validate import check_eval_section
    from bench.store.request_ranks import save_ranks
    from bench.store.results import check_writable, read_record, record_path, save_record
    from bench.train.locks import training_slot, work_dir_lock

    if not path.is_file():
        raise BenchError(f"{path}: no such record file")
    source = read_record(path)
    if source.get("weights_from"):
        raise BenchError(f"{path.name}: itself a re-evaluation of {source['weights_from']['record']}; "
                         "evaluate that record instead")
    method = source["method"]
    device = source.get("device", "cpu")
    setup = set_up(source["dataset"], config, results_dir, device)
    registry = setup.registry
    method_cls = registry.load(method)
    effective = evaluation_changes(source, overrides, path.name, method_cls.evaluation_keys,
                                   tuple(method_cls.timing_overrides))
    check_eval_section(method_cls, method, config, effective["eval"], "--set")
    if method_cls.settings_parser is not None:  # a bad value of an evaluation key fails here, in one line
        method_cls.settings_parser(effective[method])
    paths = setup.paths
    check_writable(paths.results_dir / "runs", paths.cache_dir)
    dataset, info = setup.prepare()
    weights = recorded_weights(path, method, dataset, paths.cache_dir, registry)  # same split, weights here
    budget = source.get("max_train_minutes")
    identity = run_identity(config, effective, method, dataset, seed=int(source.get("seed", 0)), device=device,
                            budget=budget, backbone=source.get("model_identity"))
    identity["weights_from"] = source["config_hash"]  # not a run that selected its epoch this way
    hash_ = config_hash(identity)
    target = record_path(paths.results_dir, dataset.name, method, hash_)
    if target.exists() and not force:
        return RunOutcome(read_record(target), target, reused=True)
    work_dir = run_work_dir(paths.cache_dir, dataset.name, method, hash_)
    slot = contextlib.nullcontext() if parallel else training_slot(paths.cache_dir, f"bench evaluate {path.name}", log)
    # The source's validation requests chose the epoch these weights come from (none chose it without one).
    info = source.get("method_info") or {}
    validated = bool(info.get("validated_epochs") or info.get("epoch_scores"))
    chosen = validated and source.get("eval_target", "test") == "test"
    # A method that chose its epoch itself (BIGRec's validation loss) says on how many requests.
    chosen_on = int(info.get("valid_loss_examples") or source.get("num_valid_requests") or 0) if chosen else 0
    with work_dir_lock(work_dir), slot:
        if weights.work_dir is not None:  # a copy: the source's checkpoints are never touched
            shutil.copytree(weights.work_dir, work_dir, dirs_exist_ok=True, ignore=shutil.ignore_patterns(PATTERN))
        record = train_and_evaluate(method_cls, method, dataset, info, effective, eval_settings(effective, method),
                                    device=device, seed=int(source.get("seed", 0)), work_dir=work_dir,
                                    cache_dir=paths.cache_dir, budget=budget, progress=True, log=log,
                                    resume_only=method_cls.loads_finished_runs, chosen_on=chosen_on,
                                    hash_neutral=section_neutral(config, method))
    if source.get("method_info", {}).get("best_epoch") != record["method_info"].get("best_epoch"):
        raise BenchError(f"{path.name}: the reloaded weights say best epoch {record['method_info'].get('best_epoch')}"
                         f", the record {source['method_info'].get('best_epoch')}: not the recorded weights")
    # The training was the source's: its cost, not this call's (which only loaded the weights).
    training = {key: source.get(key) for key in ("train_seconds", "train_seconds_total", "training_calls",
                                                  "train_peak_memory_mb")}
    record.update(config=effective, config_hash=hash_, seed=source.get("seed", 0), device=device,
                  max_train_minutes=budget, model_identity=source.get("model_identity"),
                  exclusive=not parallel, dataset_card=source.get("dataset_card"),
                  load_seconds=record["train_seconds"], **training,
                  weights_from={"record": f"runs/{source['dataset']}/{path.name}", "config_hash": source["config_hash"],
                                "git_rev": source.get("git_rev"),
                                "selection": "the source run's epoch, chosen by "
                                             + (str(info["epoch_selection"]) if info.get("epoch_selection") else
                                                "validation NDCG@10 with mask_history = "
                                                f"{source['config']['eval'].get('mask_history')}")})
    per_request = record.pop(PER_REQUEST_KEY)
    record["ranks"] = save_ranks(target, per_request)
    saved = save_record(target, record, paths.cache_dir, log)
    clear_progress(work_dir)  # the ranks now live beside the record
    return RunOutcome(record, saved, reused=False)
