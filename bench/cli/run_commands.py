"""`bench list`, `run`, `sweep`, `rescore`, `speed` and `smoke`: the commands that train, score and time."""

from __future__ import annotations

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
    bench_config,
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
    json_: JsonOption = False,
) -> None:
    """Train (or reuse) one method on one dataset, evaluate by full ranking, record the result. --json prints
    {"path", "status", "record"} (a list with --seeds; --dry-run: {"path", "recorded"})."""
    from bench.runs.run import checked_config, run
    from bench.runs.validate import check_seed
    from bench.train.distributed import is_main

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
        outcome = run(method, dataset, overrides=set_ or [], preset=preset, model=model, device=device, seed=each,
                      force=force, max_train_minutes=max_train_minutes, results_dir=results_dir, threads=threads,
                      dry_run=dry_run, parallel=parallel, allow_count_mismatch=allow_count_mismatch,
                      **({"log": to_stderr} if json_ else {}))
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

@app.command("speed")
def speed_command(
    dataset: Annotated[str, typer.Option(help="Dataset card name")] = "beauty",
    methods: Annotated[str, typer.Option(help="Comma-separated methods, measured in this order")] = "cove,bigrec",
    device: Annotated[str, typer.Option(help="cpu or cuda")] = "cpu",
    num_prompts: Annotated[int, typer.Option(help="Seeded evaluation requests, the same for every method")] = 32,
    repeats: Annotated[int, typer.Option(help="Timed passes per method (median, min, max reported)")] = 3,
    batch_size: Annotated[int, typer.Option(help="Requests per score() call; 1 = the CoVE paper's setting")] = 1,
    set_: SetOption = None,
    model: Annotated[str | None, typer.Option(help="Backbone for methods that have one")] = None,
    full_fit: Annotated[bool, typer.Option(help="Fit with full settings instead of the quick fit")] = False,
    trained: Annotated[bool, typer.Option(
        help="Reuse each method's recorded trained weights (its best recorded run whose work dir is still here); "
             "methods without one get the quick fit")] = False,
    records: Annotated[str | None, typer.Option(
        help="Comma-separated run records whose trained weights to reuse (one per method; wins over "
             "--trained)")] = None,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads (1 is stable on a shared, busy CPU)")] = None,
    seed: int = 0,
    results_dir: Annotated[Path | None, typer.Option(help="Where results/speed/ goes (default results/)")] = None,
) -> None:
    """Inference samples/sec of several methods in one process on the same requests; records speed JSON."""
    from bench.report.speed_tables import render_speed
    from bench.runs.speed import measure_speed
    from bench.runs.validate import check_seed

    check_seed(seed)
    outcome = measure_speed(dataset, [m.strip() for m in methods.split(",") if m.strip()], device=device,
                            num_prompts=num_prompts, repeats=repeats, batch_size=batch_size, overrides=set_ or [],
                            model=model, quick_fit=not full_fit, trained=trained,
                            records=[Path(r.strip()) for r in (records or "").split(",") if r.strip()],
                            threads=threads, seed=seed, results_dir=results_dir, log=typer.echo)
    typer.echo("\n".join(render_speed([outcome.record])))
    typer.echo(f"wrote {outcome.path}")

@app.command("smoke")
def smoke_command(
    device: Annotated[str, typer.Option(help="cpu or cuda")] = "cuda",
    methods: Annotated[str, typer.Option(help="Comma-separated methods")] = "cove,bigrec",
    model: Annotated[str | None, typer.Option(help="Backbone for methods that have one")] = None,
) -> None:
    """One-minute check before long runs: each method builds on the device, trains one step, ranks 8 requests."""
    from bench.runs.smoke import smoke

    smoke([m.strip() for m in methods.split(",") if m.strip()], device, model=model, log=typer.echo)
