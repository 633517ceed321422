"""`bench speed`: inference samples/sec of several methods in one process, on the same requests.

Why a separate command: a run record's samples/sec comes from whatever machine and load the run
happened to meet. A speed comparison is only fair when every method answers the same seeded
requests on the same hardware, back to back, with warm-up excluded and several repetitions.

Speed is mostly a property of the architecture and the decoding, so by default each method is fitted
quickly: on the training sequences of a few seeded users (the others left empty, which the Split
contract allows) with one epoch where its section has `epochs`. The catalogue, hence every model's
size and the full ranking, is unchanged. A generative method's decoding length does follow its
weights, so `--trained` / `--records` reuse the trained weights of recorded runs instead: the run's
work dir is copied (the recorded state is never touched) and fit() resumes a finished training,
which only loads. Each method's entry says which weights it had. Timing is the shared evaluator's (bench.runs.evaluate,
which uses bench.train.resources.Stopwatch): scoring only, device-synchronised.
"""

from __future__ import annotations

import json
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.errors import BenchError
from bench.runs.recorded_weights import RecordedWeights, find_trained_records, recorded_weights
from bench.runs.speed_options import (
    check_label,
    check_precision,
    precision_overrides,
    precisions_used,
    quick_fit_overrides,
    route_overrides,
    route_presets,
    route_records,
)
from bench.train.resources import (
    cpu_peak_mb,
    hardware_info,
    load_average,
    release_freed_memory,
    reset_cpu_peak,
    set_torch_threads,
)

QUICK_FIT_USERS = 8
VALIDATION_REQUESTS = 8
SPEED_SCHEMA = 1


@dataclass
class SpeedOutcome:
    record: dict[str, Any]
    path: Path


def speed_name(dataset: str, device: str, batch_size: int = 1, trained: bool = False, label: str | None = None) -> str:
    """One speed record per dataset, device kind, batch size, kind of weights and comparison label (batch 1,
    quick-fit weights and no label keep the plain name); the plot takes the same name."""
    suffix = ("" if batch_size == 1 else f"-b{batch_size}") + ("-trained" if trained else "")
    return f"{dataset}-{device.split(':')[0]}{suffix}" + (f"-{label}" if label else "")


def record_speed_name(record: dict[str, Any]) -> str:
    trained = any((entry.get("weights") or {}).get("kind") == "trained" for entry in record["methods"].values())
    return speed_name(record["dataset"], record["device"], int(record.get("batch_size") or 1), trained,
                      record.get("label"))


def speed_path(results_dir: Path, dataset: str, device: str, batch_size: int = 1, trained: bool = False,
               label: str | None = None) -> Path:
    return results_dir / "speed" / f"{speed_name(dataset, device, batch_size, trained, label)}.json"


def quick_fit_dataset(dataset: Any, users: int, seed: int) -> Any:
    """The same catalogue and requests, but training sequences for `users` seeded users only."""
    import random

    from bench.data.types import Dataset, Split
    from bench.runs.run import subsample_cases

    candidates = [u for u, seq in enumerate(dataset.split.train) if len(seq) >= 2]
    keep = set(random.Random(seed).sample(candidates, min(users, len(candidates))))
    train = [seq if u in keep else [] for u, seq in enumerate(dataset.split.train)]
    valid = dataset.split.valid
    valid = valid.subset([j for j, history in enumerate(valid.histories) if history])
    split = Split(dataset.split.protocol, train, subsample_cases(valid, VALIDATION_REQUESTS), dataset.split.test)
    return Dataset(dataset.name, dataset.catalogue, split, dataset.title_kind)


def summarize(values: list[float]) -> dict[str, Any]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "runs": [round(value, 4) for value in values]}


def measure_method(
    method_cls: Any,
    section: dict[str, Any],
    dataset: Any,
    cases: Any,
    *,
    device: str,
    seed: int,
    repeats: int,
    batch_size: int,
    work_dir: Path,
    cache_dir: Path,
    log: Any,
    recorded: RecordedWeights | None = None,
    weights: dict[str, Any] | None = None,
    hash_neutral: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Fit (or, with `recorded`, load a recorded run's weights from a copy of its work dir), warm up on
    one batch (not timed), then time `repeats` full passes over `cases`."""
    import shutil

    from bench.method import RunContext, seed_everything
    from bench.runs.evaluate import evaluate
    from bench.runs.run import subsample_cases
    from bench.train.resources import Stopwatch

    valid = subsample_cases(dataset.split.valid, VALIDATION_REQUESTS)  # `dataset` is the one fitted on

    def validate(model: Any) -> float:
        return evaluate(model, valid, dataset.num_items, ks=(10,), batch_size=batch_size, device=device,
                        progress=False, measure_memory=False).metrics["ndcg@10"]

    if recorded is not None and recorded.work_dir is not None:
        shutil.copytree(recorded.work_dir, work_dir, dirs_exist_ok=True)
    work_dir.mkdir(parents=True, exist_ok=True)
    release_freed_memory()
    baseline = cpu_peak_mb() if reset_cpu_peak() else None
    seed = int(recorded.record.get("seed", seed)) if recorded else seed  # a resumed run keeps its own seed
    seed_everything(seed)
    budget = recorded.record.get("max_train_minutes") if recorded else None
    resume_only = recorded is not None and recorded.work_dir is not None  # load, never train
    instance = method_cls(section, RunContext(device=device, seed=seed, work_dir=work_dir, cache_dir=cache_dir,
                                              max_train_minutes=budget, validate=validate, log=log,
                                              resume_only=resume_only, hash_neutral=dict(hash_neutral or {})))
    fit_watch = Stopwatch(device)
    with fit_watch.running():
        instance.fit(dataset)
    log(f"   {'loaded' if resume_only else 'fitted'} in {fit_watch.seconds:.1f} s; timing {repeats} passes")

    def one_pass(model: Any, requests: Any) -> Any:
        return evaluate(model, requests, dataset.num_items, ks=(10,), batch_size=batch_size, device=device,
                        progress=False)

    one_pass(instance, cases.subset(list(range(min(batch_size, len(cases))))))  # warm-up, excluded
    load_before = load_average()
    # evaluate() opens a fresh peak window per pass (freed fit() memory handed back first).
    results = [one_pass(instance, cases) for _ in range(repeats)]
    load_after = load_average()
    log(f"   {statistics.median(r.samples_per_sec for r in results):.3g} samples/s "
        f"({statistics.median(r.seconds for r in results):.2f} s a pass)")
    peak, kind = max(r.peak_memory_mb for r in results), results[0].peak_memory_kind
    described = instance.describe()
    tokens = described.get("generated_tokens_per_sample")
    entry = {
        "samples_per_sec": summarize([r.samples_per_sec for r in results]),
        "seconds_per_pass": summarize([r.seconds for r in results]),
        "peak_memory_mb": round(float(peak), 1),
        "peak_memory_kind": kind,
        # Resident memory before the method was built: data, libraries, the harness itself.
        "process_baseline_mb": None if baseline is None else round(baseline, 1),
        # With recorded weights fit() only loads them: this is the loading time.
        "fit_seconds": round(fit_watch.seconds, 3),
        "weights": weights or (recorded.describe() if recorded else {"kind": "quick_fit"}),
        # A shared machine's other work slows every method; the 1-minute load shows how busy it was.
        "load_average_1min": {"before": load_before, "after": load_after},
        "backbone": described.get("backbone"),
        "generated_tokens_per_sample": tokens,
        # Decoding length follows the weights; tokens/sec lets a reader rescale to a trained model's length.
        "generated_tokens_per_sec": (round(statistics.median(r.samples_per_sec for r in results) * tokens, 3)
                                     if tokens else None),
        "method_info": described,
    }
    del instance
    release_freed_memory()
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()
    return entry


def measure_speed(
    dataset_name: str,
    methods: list[str],
    *,
    device: str = "cpu",
    num_prompts: int = 32,
    repeats: int = 3,
    batch_size: int = 1,
    overrides: list[str] | tuple[str, ...] = (),
    presets: list[str] | tuple[str, ...] = (),
    model: str | None = None,
    quick_fit: bool = True,
    trained: bool = False,
    records: list[Path] | tuple[Path, ...] = (),
    threads: int | None = None,
    seed: int = 0,
    results_dir: Path | None = None,
    config: dict[str, Any] | None = None,
    label: str | None = None,
    precision: str | None = None,
    log: Any = print,
) -> SpeedOutcome:
    """Measure every method on the same seeded requests in this process; record atomically.

    `records` (and, for the methods they leave out, `trained`: the best recorded run still on this machine)
    give methods their trained weights; the others get the quick fit (or the full fit) of their bench.toml
    settings, or of the preset that `presets` (`METHOD=NAME`) names for them. `label` names a
    comparison of its own (e.g. same_backbone), so it does not replace the main speed record. `precision` runs
    every fitted backbone method in the same number format (a bf16 method against an fp32 one is no speed
    comparison); trained weights keep their record's, and the record says when precisions still differ.
    """
    from bench.atomic import atomic_write_text
    from bench.config import load_config, section_neutral
    from bench.runs.run import build_effective_config, eval_settings, subsample_cases
    from bench.runs.setup import set_up
    from bench.store.results import git_revision, now_iso, package_versions

    check_label(label)
    check_precision(precision)
    if not methods:
        raise BenchError("--methods: name at least one method")
    if len(set(methods)) != len(methods):
        raise BenchError(f"--methods: a method is listed twice: {','.join(methods)}")
    if num_prompts < 1 or repeats < 1 or batch_size < 1:
        raise BenchError("--num-prompts, --repeats and --batch-size must be at least 1")
    config = config if config is not None else load_config()
    setup = set_up(dataset_name, config, results_dir, device)  # a bad card fails before any method is built
    registry = setup.registry
    for method in methods:
        registry.target(method)
    routed = route_overrides(list(overrides), methods)
    preset_of = route_presets(list(presets), methods)
    named = route_records(list(records), methods)
    for method in named:
        if method in preset_of:
            raise BenchError(f"--preset {method}={preset_of[method]}: {method} uses recorded weights, whose settings "
                             "are the record's")
        if any(not a.startswith("eval.") for a in routed[method]):
            raise BenchError(f"--set {routed[method][0]}: {method} uses recorded weights, whose settings are the "
                             "record's; a changed setting would not be those weights")
    effective: dict[str, dict[str, Any]] = {}
    applied_quick: dict[str, list[str]] = {}
    for method in methods:
        quick = quick_fit_overrides(method, config.get(method, {})) if quick_fit else []
        applied_quick[method] = quick
        same_format = precision_overrides(method, config.get(method, {}), precision)
        own_model = model if model is not None and "model" in config.get(method, {}) else None
        effective[method] = build_effective_config(config, method, preset_of.get(method),
                                                   [*quick, *same_format, *routed[method]], own_model)
    targets = {eval_settings(effective[m], m).get("target", "test") for m in methods}
    if len(targets) != 1:
        raise BenchError(f"eval.target differs between methods ({sorted(targets)}): speed needs the same requests")
    target = targets.pop()

    set_torch_threads(threads)
    paths = setup.paths
    dataset, info = setup.prepare()
    reused = {m: recorded_weights(p, m, dataset, paths.cache_dir, registry) for m, p in named.items()}
    if trained:
        # A method given a --preset is timed as that preset's model, not as its best recorded run.
        found = find_trained_records(paths.results_dir, dataset,
                                     [m for m in methods if m not in reused and m not in preset_of],
                                     paths.cache_dir, registry)
        reused.update(found)
    for method, weights in reused.items():
        effective[method] = weights.record["config"]
        applied_quick[method] = []
        log(f"{method}: trained weights of {weights.describe()['record']}")
    for method in methods:
        forced = registry.load(method).timing_overrides
        if forced:
            effective[method] = {**effective[method], method: {**effective[method][method], **forced}}
    cases = subsample_cases(dataset.split.cases(target), num_prompts)
    hardware = hardware_info(device)
    measured: dict[str, Any] = {}
    fit_dataset = quick_fit_dataset(dataset, QUICK_FIT_USERS, seed) if quick_fit else dataset
    from bench.train.locks import training_slot

    # Timings need the cores to themselves: wait for any training under this cache folder.
    with training_slot(paths.cache_dir, f"bench speed --dataset {dataset.name}", log):
        for method in methods:
            log(f"== speed: {method} on {dataset.name} ({len(cases)} requests x {repeats}, batch {batch_size}, "
                f"{device})")
            # A fresh work dir: a checkpoint left by an earlier speed run must not be resumed.
            (paths.cache_dir / "work").mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=paths.cache_dir / "work", prefix=f"speed-{method}-") as work:
                measured[method] = measure_method(
                    registry.load(method), effective[method][method],
                    dataset if method in reused or not quick_fit else fit_dataset, cases, device=device,
                    seed=seed, repeats=repeats, batch_size=batch_size, work_dir=Path(work),
                    cache_dir=paths.cache_dir, log=log,
                    recorded=reused.get(method),
                    weights=None if method in reused or quick_fit else {"kind": "full_fit"},
                    hash_neutral=section_neutral(config, method))
    backbones = sorted({str(entry["backbone"]) for entry in measured.values() if entry["backbone"]})
    formats = precisions_used(measured)
    if len(set(formats.values())) > 1:
        log("warning: the methods ran in different precisions (" + ", ".join(f"{m} {p}" for m, p in formats.items())
            + "): a speed ratio between them mixes number formats; --precision auto (or fp32) runs the fitted "
              "ones alike")

    quick = [m for m in methods if m not in reused and quick_fit]
    weights = ""
    if reused:
        weights = ("Trained weights of recorded runs (loaded from a copy of each run's work dir) for "
                   + ", ".join(f"{m} ({reused[m].describe()['record']})" for m in methods if m in reused) + ". ")
    if quick:
        fitted = "; ".join(f"{m}: {', '.join(applied_quick[m]) or 'its own settings'}" for m in quick)
        weights += (f"{'Weights' if not reused else 'The other methods’ weights'} are NOT trained: speed depends on "
                    f"architecture and decoding, so {', '.join(quick)} {'was' if len(quick) == 1 else 'were'} "
                    f"fitted on the training sequences of {QUICK_FIT_USERS} seeded users only ({fitted}).")
        if any(a.split("=")[0].endswith(".decode_length") for m in quick for a in applied_quick[m]):
            weights += (" A generative method's decoding length depends on its weights, so it is fixed to the "
                        "catalogue's mean title length (decode_length = mean_title); see "
                        "generated_tokens_per_sample.")
    elif not quick_fit and len(reused) < len(methods):
        weights += "Each other method was fitted with its full bench.toml settings before timing."
    weights = weights.strip()
    record = {
        "schema": SPEED_SCHEMA,
        "label": label,
        "dataset": dataset.name,
        "split_hash": dataset.split.hash,
        "eval_target": target,
        "device": device,
        "hardware": hardware,
        "backbone": ", ".join(backbones) or None,
        "num_prompts": len(cases),
        "requests_seed": 0,
        "repeats": repeats,
        "batch_size": batch_size,
        "warmup": f"one untimed batch of {min(batch_size, len(cases))} request(s) per method",
        "timing": "bench.runs.evaluate: method.score only (ranking excluded), device-synchronised wall clock",
        "weights": weights,
        "methods": measured,
        "measured_in_order": methods,
        # The first method measured against each later one (median samples/s), for scripts; tables recompute it.
        "speed_ratios": {"of": methods[0], "over": {m: measured[methods[0]]["samples_per_sec"]["median"]
                                                    / measured[m]["samples_per_sec"]["median"] for m in methods[1:]}},
        "config": {"methods": effective, "quick_fit": bool(quick), "quick_fit_overrides": applied_quick,
                   "quick_fit_users": QUICK_FIT_USERS if quick else None,
                   "records": {m: w.describe()["record"] for m, w in reused.items()},
                   "overrides": list(overrides), "presets": preset_of, "model": model, "seed": seed,
                   "threads": threads,
                   "precision": precision},
        "dataset_info": {key: info.get(key) for key in ("users", "items", "interactions", "content_hash")},
        "versions": package_versions(),
        "git_rev": git_revision(),
        "created": now_iso(),
    }
    path = speed_path(paths.results_dir, dataset.name, device, batch_size, trained=bool(reused), label=label)
    atomic_write_text(path, json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
    return SpeedOutcome(record, path)
