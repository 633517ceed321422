"""`bench leaderboard`, `compare`, `show`, `baselines` and `demo`: the commands that read records back."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bench.cli.common import (
    JsonOption,
    ResultsDirOption,
    ThreadsOption,
    app,
    bench_config,
    echo_json,
    ordered_metrics,
    print_record,
)
from bench.errors import BenchError, did_you_mean, shown

DEMO_NOTE = ("Each method's strongest converged record on these requests (the demo's own runs, or better ones\n"
             "recorded here); every row and the published numbers: results/README.md")


@app.command("leaderboard")
def leaderboard_command(
    results_dir: Annotated[Path | None, typer.Option(help="Records folder (default results/)")] = None,
    strict: Annotated[bool, typer.Option(help="Fail on a corrupt record instead of skipping it")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the files written, not the tables")] = False,
) -> None:
    """Build results/leaderboard.md, .csv, plots/ and README.md from recorded runs and speed records."""
    from bench.report.leaderboard import write_leaderboard
    from bench.runs.setup import run_paths
    from bench.store.results import check_writable

    paths = run_paths(bench_config(), results_dir)
    check_writable(paths.results_dir)  # before the records are read and the plots drawn
    written = write_leaderboard(paths.results_dir, strict=strict)
    if not quiet:
        typer.echo(written.markdown_text)
    for path in written.paths:
        typer.echo(f"wrote {path}")


@app.command("compare")
def compare_command(
    run_a: Annotated[str, typer.Argument(metavar="RUN_A", help="A record file, or a method label with --dataset "
                                                              "(e.g. sasrec_native)")],
    run_b: Annotated[str, typer.Argument(metavar="RUN_B", help="The other run, the same way")],
    dataset: Annotated[str | None, typer.Option(help="Dataset whose records the labels name")] = None,
    position: Annotated[str | None, typer.Option(help="test or valid (default: A's reported position)")] = None,
    results_dir: Annotated[Path | None, typer.Option(help="Records folder (default results/)")] = None,
    json_: JsonOption = False,
) -> None:
    """Paired comparison of two runs on the same requests: differences, their CIs and p-values, and how
    many requests each wins."""
    from bench.report.compare import compare, render, resolve_record
    from bench.report.labels import method_label
    from bench.runs.setup import run_paths

    paths = run_paths(bench_config(), results_dir)
    first = resolve_record(run_a, paths.results_dir, dataset)
    second = resolve_record(run_b, paths.results_dir, dataset)
    result = compare(first, second, position)
    if json_:
        echo_json({"a": {"label": method_label(first[1]), "record": str(first[0])},
                    "b": {"label": method_label(second[1]), "record": str(second[0])}, **result})
        return
    typer.echo("\n".join(render(f"{method_label(first[1])} ({first[0].name})",
                                f"{method_label(second[1])} ({second[0].name})", result)))


@app.command("show")
def show_command(
    record: Annotated[str, typer.Argument(metavar="RECORD", help="A record file, or a method label with --dataset")],
    dataset: Annotated[str | None, typer.Option(help="Dataset whose records the label names")] = None,
    results_dir: ResultsDirOption = None,
) -> None:
    """One record, readably: what ran, its metrics in K order, how training ended, time and memory."""
    from bench.report.compare import resolve_record
    from bench.report.labels import method_label
    from bench.runs.setup import run_paths

    path, found = resolve_record(record, run_paths(bench_config(), results_dir).results_dir, dataset)
    typer.echo("\n".join(render_record(path, found, method_label(found))))


def render_record(path: Path, record: dict, label: str) -> list[str]:
    """The facts a reader asks of one run first, in the order they ask; everything else is in the JSON."""
    from bench.report.demo import training_text
    from bench.report.labels import scoring_speed

    sub = record.get("subsample") or {}
    info = record.get("method_info") or {}
    own = record.get("config", {}).get(record["method"]) or {}
    total, calls = record.get("train_seconds_total"), record.get("training_calls")
    lines = [f"{label} on {record['dataset']}  ({path})",
             f"scored:     {record.get('eval_target', 'test')} position, {record.get('num_eval_requests', '?')} "
             f"requests" + (f" (subsample of {sub['eval_requests_total']:,})" if sub.get("eval_requests") else "")
             + (", history masked" if record.get("mask_history") else ""),
             "metrics:    " + "  ".join(f"{k}={v:.4f}" for k, v in ordered_metrics(record.get("metrics") or {})),
             f"training:   {training_text(record)}"
             + (f"; train subsample {sub['train']}" if sub.get("train") else ""),
             f"time:       train {record.get('train_seconds')} s this call"
             + (f", {total} s over {calls or '?'} calls" if total is not None and calls not in (None, 1) else "")
             + f"; evaluation {record.get('eval_seconds')} s, {scoring_speed(record) or '–'} samples/s",
             f"memory:     inference peak {record.get('peak_memory_mb')} MB, training peak "
             f"{record.get('train_peak_memory_mb')} MB",
             f"run:        seed {record.get('seed')}, device {record.get('device')}, budget "
             f"{record.get('max_train_minutes') or 'none'} min, config hash {record.get('config_hash')}",
             f"made:       {record.get('created')} at {record.get('git_rev')}",
             "settings:   " + (", ".join(f"{k}={v}" for k, v in sorted(own.items())) or "none")]
    if info.get("deviations"):
        lines.append(f"deviations: {info['deviations']}")
    return lines


@app.command("baselines")
def baselines_command(
    dataset: Annotated[str, typer.Option(help="Dataset card name (see `bench list`)")],
    only: Annotated[str | None, typer.Option(help="Comma-separated subset of the plugins' baselines (`bench list`)")
                    ] = None,
    threads: ThreadsOption = None,
    seed: int = 0,
    max_train_minutes: Annotated[float | None, typer.Option(help="Budget per method in minutes (default or 0: "
                                                                 "none, i.e. train to early stopping)")] = None,
    results_dir: Annotated[Path | None, typer.Option(help="Where records go (default results/)")] = None,
    force: Annotated[bool, typer.Option(help="Re-run methods that already have an identical record")] = False,
) -> None:
    """The ID baselines to compare a new method against, trained one after another to early stopping
    (cheapest first; recorded runs are reused, interrupted RecBole and native SASRec runs resume)."""
    from bench.registry import configured_registry
    from bench.report.demo import DemoTable, render_demo
    from bench.report.leaderboard import write_leaderboard
    from bench.runs.run import checked_config, run
    from bench.runs.setup import run_paths

    config = bench_config()
    baselines = configured_registry(config).baselines
    names = [n.strip() for n in only.split(",")] if only else list(baselines)
    unknown = [n for n in names if n not in baselines]
    if unknown:
        raise BenchError(f"--only {shown(unknown[0])}: expected some of {', '.join(baselines)}."
                         f"{did_you_mean(unknown[0], baselines)}")
    for name in names:  # every method's settings checked before the first one trains
        checked_config(config, name, seed=seed, max_train_minutes=max_train_minutes)
    records = []
    for name in names:
        typer.echo(f"== {name} on {dataset}")
        outcome = run(name, dataset, config=config, threads=threads, seed=seed, max_train_minutes=max_train_minutes,
                      results_dir=results_dir, force=force)
        print_record(outcome)
        records.append(outcome.record)
    written = write_leaderboard(run_paths(config, results_dir).results_dir)
    typer.echo("\n".join(render_demo(DemoTable(records))))
    typer.echo(f"full tables: {written.paths[0]}")


@app.command("demo")
def demo_command(
    only: Annotated[str | None, typer.Option(help="Comma-separated subset of the [demo] methods")] = None,
) -> None:
    """The main job: run (or reuse) the [demo] runs of bench.toml on real data and print the table once."""
    from bench.report.demo import choose_rows, render_demo
    from bench.report.leaderboard import write_leaderboard
    from bench.runs.run import run
    from bench.runs.setup import run_paths
    from bench.store.results import iter_records

    config = bench_config()
    demo = config.get("demo", {})
    dataset = demo.get("dataset", "beauty")
    wanted = {name.strip() for name in only.split(",") if name.strip()} if only is not None else None
    known = sorted({e["method"] for e in demo.get("runs", [])})
    for name in sorted(wanted or ()):
        if name not in known:
            raise BenchError(f"--only {shown(name)}: not a [demo] method.{did_you_mean(name, known)} "
                             f"Available: {', '.join(known)}")
    if wanted is not None and not wanted:
        raise BenchError(f"--only {shown(only)}: name at least one [demo] method: {', '.join(known)}")
    entries = [e for e in demo.get("runs", []) if wanted is None or e["method"] in wanted]

    def demo_run(entry: dict, dry_run: bool = False):
        return run(entry["method"], dataset, overrides=entry.get("set", []), preset=entry.get("preset"),
                   max_train_minutes=entry.get("max_train_minutes"), config=config, dry_run=dry_run)

    missing = [e["method"] for e in entries if not demo_run(e, dry_run=True).reused]
    typer.echo(f"== demo on {dataset}: {len(entries) - len(missing)} of {len(entries)} runs recorded"
               + (f"; to run: {', '.join(missing)}" if missing else ""))
    records = []
    for entry in entries:
        outcome = demo_run(entry)
        if not outcome.reused:
            print_record(outcome)
        records.append(outcome.record)
    results_dir = run_paths(config).results_dir
    written = write_leaderboard(results_dir)
    table = choose_rows(records, [record for _, record in iter_records(results_dir)], floor=demo.get("floor"))
    if missing:
        typer.echo(f"\n== demo on {dataset}: every run recorded")
    typer.echo("\n".join(render_demo(table)))
    typer.echo(DEMO_NOTE)
    typer.echo(f"full tables: {written.paths[0]}")
