"""`bench list`, `run`, `sweep`, `rescore`, `evaluate`, `smoke`, `data`, `backbone` and `cache`: the commands that
train, score and prepare what they need (`bench speed`, which times them, is in bench.cli.speed_commands)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from bench.cli.common import (
    BudgetOption,
    JsonOption,
    ParallelOption,
    SetOption,
    ThreadsOption,
    app,
    backbone_app,
    bench_config,
    cache_app,
    data_app,
    echo_json,
    print_record,
    to_stderr,
)
from bench.errors import BenchError, shown


@app.command("list")
def list_command(json_: JsonOption = False) -> None:
    """List registered methods, their presets (with bench.toml's comment on each) and dataset cards."""
    from bench.config import config_path
    from bench.data.cards import card_names
    from bench.presets import preset_descriptions
    from bench.registry import configured_registry

    config = bench_config()
    registry = configured_registry(config)
    described = preset_descriptions(config_path())
    presets = {method: {name: described.get((method, name), "")
                        for name in sorted((config.get(method) or {}).get("presets", {}))}
               for method in registry.names()}
    if json_:
        echo_json({"methods": registry.names(), "presets": {m: p for m, p in presets.items() if p},
                    "datasets": card_names()})
        return
    typer.echo("methods:  " + ", ".join(registry.names()))
    typer.echo("datasets: " + ", ".join(card_names()))
    typer.echo("presets (--preset NAME):")
    for method, named in presets.items():
        for name, text in named.items():
            typer.echo(f"  {method + '.' + name:<24} {text}".rstrip())


@app.command("run")
def run_command(
    method: Annotated[str, typer.Option(help="Method name (see `bench list`)")],
    dataset: Annotated[str, typer.Option(help="Dataset card name (see `bench list`)")],
    set_: SetOption = None,
    preset: Annotated[str | None, typer.Option(help="Named preset from bench.toml, e.g. paper")] = None,
    model: Annotated[str | None, typer.Option(help="Backbone: 'smollm2' (embedded) or a local HF model dir")] = None,
    device: Annotated[str, typer.Option(help="cpu or cuda")] = "cpu",
    seed: int = 0,
    seeds: Annotated[str | None, typer.Option(help="Comma-separated seeds, one recorded run each (e.g. 0,1,2); "
                                                   "the leaderboard shows their mean and sd")] = None,
    force: Annotated[bool, typer.Option(help="Re-run even if an identical record exists")] = False,
    max_train_minutes: BudgetOption = None,
    results_dir: Annotated[Path | None, typer.Option(help="Where records go (default results/)")] = None,
    threads: ThreadsOption = None,
    dry_run: Annotated[bool, typer.Option(help="Only say whether this exact config is recorded (exit 0) or "
                                               "not (exit 1); compute nothing")] = False,
    parallel: ParallelOption = False,
    allow_count_mismatch: Annotated[bool, typer.Option(help="Run although the data's counts differ from the "
                                                             "card's expected counts (recorded)")] = False,
    finish: Annotated[bool, typer.Option(help="End this run's resumable training where it stands: validate, "
                                              "rank the test requests with the best validated epoch and record "
                                              "it as stopped on request (not converged). If another process "
                                              "is training it, that process is asked to finish")] = False,
    json_: JsonOption = False,
) -> None:
    """Train (or reuse) one method on one dataset, evaluate by full ranking, record the result. --json prints
    {"path", "status", "record"} (a list with --seeds; --dry-run: {"path", "recorded"})."""
    from bench.runs.run import checked_config, run
    from bench.runs.validate import check_seed
    from bench.train.distributed import is_main
    from bench.train.lifecycle import FinishHandedOver

    if finish and (force or dry_run):
        raise BenchError(f"--finish with {'--force' if force else '--dry-run'}: --finish ends the recorded config's "
                         "training where it stands; run it alone")
    chosen = [seed]
    if seeds is not None:
        try:
            chosen = [int(part) for part in seeds.split(",") if part.strip()]
        except ValueError:
            raise BenchError(f"--seeds {shown(seeds)}: expected comma-separated integers, e.g. 0,1,2") from None
        if not chosen or seed != 0:
            raise BenchError("--seeds: give a non-empty list, and not together with --seed")
        config = bench_config()
        for each in chosen:  # every seed checked before the first run starts
            check_seed(each, "--seeds:")
            checked_config(config, method, overrides=set_ or [], preset=preset, model=model, device=device, seed=each,
                           max_train_minutes=max_train_minutes)
    recorded = True
    documents = []
    for each in chosen:
        try:
            outcome = run(method, dataset, overrides=set_ or [], preset=preset, model=model, device=device,
                          seed=each, force=force, max_train_minutes=max_train_minutes, results_dir=results_dir,
                          threads=threads, dry_run=dry_run, parallel=parallel,
                          allow_count_mismatch=allow_count_mismatch, finish=finish,
                          **({"log": to_stderr} if json_ else {}))
        except FinishHandedOver as handed_over:  # the request stands; the other process records
            typer.echo(str(handed_over), err=True)
            raise typer.Exit(0) from None
        recorded = recorded and outcome.reused
        if json_:
            documents.append({"path": str(outcome.path), "recorded": outcome.reused} if dry_run else
                             {"path": str(outcome.path), "status": "reused" if outcome.reused else "recorded",
                              "record": outcome.record})
        elif dry_run:
            typer.echo(f"{'recorded' if outcome.reused else 'not recorded'}: {outcome.path}")
        elif is_main():  # under torchrun, rank 0 speaks for all
            print_record(outcome)
    if json_ and is_main():
        echo_json(documents if seeds is not None else documents[0])
    if dry_run:
        raise typer.Exit(0 if recorded else 1)


@app.command("sweep")
def sweep_command(
    method: Annotated[str, typer.Option(help="Method name (see `bench list`)")],
    dataset: Annotated[str, typer.Option(help="Dataset card name (see `bench list`)")],
    grid: Annotated[list[str], typer.Option(help="section.key=v1,v2,... (repeatable: cartesian product)")],
    set_: SetOption = None,
    preset: Annotated[str | None, typer.Option(help="Named preset from bench.toml, applied to every point")] = None,
    model: Annotated[str | None, typer.Option(help="Backbone: 'smollm2' (embedded) or a local HF model dir")] = None,
    device: Annotated[str, typer.Option(help="cpu or cuda")] = "cpu",
    seed: Annotated[int, typer.Option(help="Run seed of every point (0 to 2^32 - 1)")] = 0,
    force: Annotated[bool, typer.Option(help="Re-run points that already have an identical record")] = False,
    max_train_minutes: BudgetOption = None,
    results_dir: Annotated[Path | None, typer.Option(help="Where records go (default results/)")] = None,
    threads: ThreadsOption = None,
) -> None:
    """Run a grid of configs; each point is its own record (finished points are reused). Every point is
    checked before the first one runs."""
    import itertools

    from bench.runs.run import checked_config, run

    axes = []
    for entry in grid:
        key, sep, values = entry.partition("=")
        if not sep or not values:
            raise BenchError(f"--grid {shown(entry)}: expected section.key=v1,v2,...")
        axes.append([f"{key}={value}" for value in values.split(",")])
    config = bench_config()
    points = list(itertools.product(*axes))
    for point in points:
        checked_config(config, method, overrides=[*(set_ or []), *point], preset=preset, model=model, device=device,
                       seed=seed, max_train_minutes=max_train_minutes)
    for point in points:
        typer.echo("== " + " ".join(point))
        outcome = run(method, dataset, overrides=[*(set_ or []), *point], preset=preset, model=model,
                      device=device, seed=seed, force=force, max_train_minutes=max_train_minutes,
                      results_dir=results_dir, threads=threads, config=config)
        print_record(outcome)


@app.command("rescore")
def rescore_command(
    records: Annotated[list[Path], typer.Argument(help="Record files made before per-request ranks were stored")],
    threads: ThreadsOption = None,
) -> None:
    """Attach per-request ranks to older records by scoring their own trained weights again; attached only
    when they reproduce every recorded metric exactly."""
    from bench.runs.rescore import rescore
    from bench.store.results import read_record
    from bench.train.resources import set_torch_threads

    set_torch_threads(threads)
    config = bench_config()
    read = [(path, read_record(path)) for path in records]  # every file read before the first is scored
    for path, record in read:
        record = rescore(path, record, config, log=typer.echo)
        typer.echo(f"{path}: per-request ranks in {record['ranks']['file']} ({record['ranks']['positions']})")


@app.command("evaluate")
def evaluate_command(
    record: Annotated[Path, typer.Argument(help="A record under results/runs/ whose trained weights are still here")],
    set_: SetOption = None,
    force: Annotated[bool, typer.Option(help="Score again even if this evaluation is already recorded")] = False,
    results_dir: Annotated[Path | None, typer.Option(help="Where records go (default results/)")] = None,
    threads: ThreadsOption = None,
    parallel: ParallelOption = False,
    json_: JsonOption = False,
) -> None:
    """Score a recorded run's own trained weights again under other evaluation options (eval.mask_history,
    eval.extra_targets, eval.ks), e.g. RecBole's protocol, which masks the user's history items; recorded as
    its own run that names the weights it used (weights_from). Nothing is trained."""
    from bench.runs.reevaluate import reevaluate
    from bench.train.resources import set_torch_threads

    set_torch_threads(threads)
    outcome = reevaluate(record, set_ or [], bench_config(), results_dir=results_dir, force=force, parallel=parallel,
                         **({"log": to_stderr} if json_ else {}))
    if json_:
        echo_json({"path": str(outcome.path), "status": "reused" if outcome.reused else "recorded",
                   "record": outcome.record})
    else:
        print_record(outcome)


@app.command("smoke")
def smoke_command(
    device: Annotated[str, typer.Option(help="cpu or cuda")] = "cuda",
    methods: Annotated[str, typer.Option(help="Comma-separated methods")] = "cove,bigrec,lcrec",
    model: Annotated[str | None, typer.Option(help="Backbone for methods that have one")] = None,
) -> None:
    """One-minute check before long runs: each method builds on the device, trains two steps, ranks 8 requests."""
    from bench.runs.smoke import smoke

    smoke([m.strip() for m in methods.split(",") if m.strip()], device, model=model, log=typer.echo)


def _prepare(name: str, force: bool = False):
    from bench.runs.setup import set_up

    setup = set_up(name, bench_config())
    return (setup, *setup.prepare(force))


@data_app.command("init")
def data_init(
    name: str,
    format_: Annotated[str, typer.Option("--format", help="lcrec_json, recbole_atomic, interactions_csv or "
                                                          "amazon2023")],
    inter: Annotated[Path, typer.Option(help="Interactions file (.inter.json, .inter, .csv/.parquet; amazon2023: "
                                             "<Category>.jsonl[.gz])")],
    items: Annotated[Path | None, typer.Option(help="Optional item text file (.item.json, .item, .csv; "
                                                    "amazon2023: meta_<Category>.jsonl[.gz])")] = None,
    out: Annotated[Path, typer.Option(help="Folder for <name>.toml (put it on BENCH_DATASETS_DIR)")] = Path("."),
    drop_short_users: Annotated[bool, typer.Option(help="Drop users with too few items (counted) instead "
                                                        "of refusing the data")] = False,
    core: Annotated[int | None, typer.Option(help="amazon2023: k-core filter (default 5; 0 = none)")] = None,
) -> None:
    """Write a dataset card for your own files, with the counts it measured."""
    from bench.data.prepare import write_card

    card, counts = write_card(name, format_, inter, items, out, drop_short_users=drop_short_users, core=core)
    typer.echo(f"wrote {card}: {counts['users']:,} users, {counts['items']:,} items, {counts['interactions']:,} "
               f"interactions" + (f", {counts['short_users_dropped']} short users dropped"
                                  if counts["short_users_dropped"] else ""))
    typer.echo(f"run: bench run --method pop --dataset {card}")


@data_app.command("prepare")
def data_prepare(name: str, force: Annotated[bool, typer.Option(help="Rebuild the cache")] = False) -> None:
    """Read a dataset's sources, split it and cache the prepared form."""
    _, _, info = _prepare(name, force)
    typer.echo(f"{name}: {info['users']} users, {info['items']} items, {info['interactions']} interactions; "
               f"split {info['split']} ({info['split_hash']}); cached at {info['cache']}")


@data_app.command("info")
def data_info(name: str) -> None:
    """Counts, average length, title coverage and split of a dataset; checks the card's expected counts."""
    setup, _, info = _prepare(name)
    for key in ("dataset", "source_format", "origin", "users", "items", "interactions", "avg_length",
                "max_length", "title_kind", "items_with_title", "title_coverage_items",
                "title_coverage_interactions", "split", "split_hash", "valid_requests", "test_requests"):
        typer.echo(f"{key:28s} {info.get(key)}")
    mismatches = setup.mismatches(info)
    if mismatches:
        raise BenchError(f"{name}: counts differ from the dataset card (expected, got): {mismatches}")
    if setup.card.expected:
        typer.echo("counts match the dataset card")


@data_app.command("download")
def data_download(name: str) -> None:
    """Download the raw Amazon files a card lists into the data dir (needs a network)."""
    from bench.data.prepare import download
    from bench.runs.setup import run_paths

    for path in download(name, run_paths(bench_config()).data_dir):
        typer.echo(f"have {path}")


@backbone_app.command("random")
def backbone_random(
    out: Annotated[Path, typer.Argument(help="New folder to write (a Hugging Face model folder)")],
    hidden: Annotated[int, typer.Option(help="Hidden size (multiple of 4)")] = 64,
    layers: Annotated[int, typer.Option(help="Transformer layers")] = 2,
    seed: Annotated[int, typer.Option(help="Initialisation seed")] = 0,
    tokenizer: Annotated[str, typer.Option(help="'smollm2' or a folder holding a Hugging Face tokenizer")] = "smollm2",
) -> None:
    """A randomly initialised small Llama (no pretraining): full-catalogue runs on a CPU in minutes."""
    from bench.runs.setup import run_paths
    from bench.train.backbone import model_dir, save_random_backbone

    cache_dir = run_paths(bench_config()).cache_dir
    tokenizer_dir = model_dir(tokenizer, cache_dir) if tokenizer == "smollm2" else Path(tokenizer)
    path = save_random_backbone(out, tokenizer_dir, hidden=hidden, layers=layers, seed=seed)
    typer.echo(f"wrote {path} (random weights, hidden {hidden}, {layers} layers, seed {seed}); use --model {path}")


@cache_app.command("ls")
def cache_ls(json_: JsonOption = False) -> None:
    """Every run's work dir with its size, and whether its record exists (else it is a resume point)."""
    from bench.runs.setup import run_paths
    from bench.store.cache import work_dirs

    paths = run_paths(bench_config())
    entries = work_dirs(paths.cache_dir, paths.results_dir)
    if json_:
        echo_json([{"path": str(e.path), "dataset": e.dataset, "run": e.run, "bytes": e.bytes,
                     "recorded": e.recorded} for e in entries])
        return
    for entry in entries:
        state = "recorded" if entry.recorded else "unfinished (resumable)"
        typer.echo(f"{entry.bytes / 2**20:9.1f} MB  {entry.dataset}/{entry.run}  {state}")
    typer.echo(f"{sum(e.bytes for e in entries) / 2**20:9.1f} MB in {len(entries)} work dirs under "
               f"{paths.cache_dir / 'work'}")


@cache_app.command("clean")
def cache_clean(
    all_: Annotated[bool, typer.Option("--all", help="Also remove unfinished runs' resume points")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Remove without asking")] = False,
    dry_run: Annotated[bool, typer.Option(help="Only list what would be removed")] = False,
) -> None:
    """Remove the work dirs of runs whose record exists (records, datasets and backbones stay). Asks first
    (or --yes): a recorded run's work dir holds the trained weights `bench rescore` and `speed --trained` need."""
    from bench.runs.setup import run_paths
    from bench.store.cache import clean, work_dirs

    paths = run_paths(bench_config())
    doomed = [e for e in work_dirs(paths.cache_dir, paths.results_dir) if e.recorded or all_]
    size = f"{len(doomed)} work dirs, {sum(e.bytes for e in doomed) / 2**20:.1f} MB"
    if dry_run:
        for entry in doomed:
            typer.echo(f"{entry.bytes / 2**20:9.1f} MB  {entry.dataset}/{entry.run}  "
                       f"{'recorded' if entry.recorded else 'unfinished (resumable)'}")
        typer.echo(f"would remove {size}")
        return
    if doomed and not yes:
        warning = (f"remove {size}? Their trained weights go too: `bench rescore` and `bench speed --trained` "
                   "need them" + ("; unfinished runs lose their resume points" if all_ else ""))
        if not sys.stdin.isatty():
            raise BenchError(f"cache clean would {warning}. Pass --yes to remove them (--dry-run lists them)")
        if not typer.confirm(warning[0].upper() + warning[1:], default=False):
            typer.echo("nothing removed")
            return
    removed = clean(paths.cache_dir, paths.results_dir, include_unfinished=all_)
    typer.echo(f"removed {len(removed)} work dirs, {sum(e.bytes for e in removed) / 2**20:.1f} MB")
