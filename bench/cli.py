"""`bench` command line. Imports stay lazy so `bench --help` and `bench list` never load torch."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from bench.errors import BenchError, did_you_mean, shown

HELP_NAMES = {"help_option_names": ["-h", "--help"]}  # -h too: what a shell user tries first
app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  context_settings=HELP_NAMES,
                  help="recbench: LLM-based sequential recommenders on shared Amazon splits, full ranking.")
data_app = typer.Typer(no_args_is_help=True, context_settings=HELP_NAMES,
                       help="Prepare, inspect and download datasets.")
app.add_typer(data_app, name="data")
backbone_app = typer.Typer(no_args_is_help=True, context_settings=HELP_NAMES,
                           help="Make local backbones for `--model PATH`.")
app.add_typer(backbone_app, name="backbone")
cache_app = typer.Typer(no_args_is_help=True, context_settings=HELP_NAMES,
                        help="List or remove training work dirs (checkpoints).")
app.add_typer(cache_app, name="cache")

SetOption = Annotated[list[str] | None, typer.Option("--set", help="Override a config key: section.key=value")]
ThreadsOption = Annotated[int | None, typer.Option(help="torch CPU threads (recorded; default: torch's choice)")]
ParallelOption = Annotated[bool, typer.Option(help="Train beside other runs instead of waiting for them "
                                                   "(recorded as exclusive: false; timings then share cores)")]
BudgetOption = Annotated[float | None, typer.Option(help="Stop training after this many minutes, then evaluate and "
                                                         "record (0 = no budget, as in bench.toml)")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout (for scripts) instead "
                                                         "of text; progress goes to stderr")]
ResultsDirOption = Annotated[Path | None, typer.Option(help="Records folder (default results/)")]


def _version(value: bool) -> None:
    if value:
        from importlib import metadata

        try:
            version = metadata.version("recbench")
        except metadata.PackageNotFoundError:  # run from a checkout that was never installed
            version = "unknown (not installed)"
        typer.echo(f"bench (recbench) {version}")
        raise typer.Exit(0)


@app.callback()
def _main_options(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit")] = False,
) -> None:
    """recbench: LLM-based sequential recommenders on shared Amazon splits, full ranking."""


def _echo_json(value: object) -> None:
    typer.echo(json.dumps(value, indent=2, sort_keys=True, default=str))


def _stderr(message: str) -> None:
    """Progress lines when stdout carries JSON."""
    typer.echo(message, err=True)


def ordered_metrics(metrics: dict[str, float]) -> list[tuple[str, float]]:
    """NDCG then HR, each by increasing K (a plain sort puts hr@10 before hr@5)."""
    def key(item: tuple[str, float]) -> tuple[int, str, int]:
        name, _, k = item[0].partition("@")
        return ({"ndcg": 0, "hr": 1}.get(name, 2), name, int(k) if k.isdigit() else 0)

    return sorted(metrics.items(), key=key)


def _config():
    from bench.config import load_config

    return load_config()


@app.command("list")
def list_command(json_: JsonOption = False) -> None:
    """List registered methods, their presets (with bench.toml's comment on each) and dataset cards."""
    from bench.config import config_path
    from bench.data.cards import card_names
    from bench.presets import preset_descriptions
    from bench.registry import method_registry

    config = _config()
    registry = method_registry(config.get("plugins", {}).get("modules", ["methods"]))
    described = preset_descriptions(config_path())
    presets = {method: {name: described.get((method, name), "")
                        for name in sorted((config.get(method) or {}).get("presets", {}))}
               for method in registry.names()}
    if json_:
        _echo_json({"methods": registry.names(), "presets": {m: p for m, p in presets.items() if p},
                    "datasets": card_names()})
        return
    typer.echo("methods:  " + ", ".join(registry.names()))
    typer.echo("datasets: " + ", ".join(card_names()))
    typer.echo("presets (--preset NAME):")
    for method, named in presets.items():
        for name, text in named.items():
            typer.echo(f"  {method + '.' + name:<24} {text}".rstrip())


def _print_record(outcome) -> None:
    record = outcome.record
    status = "reused" if outcome.reused else "recorded"
    metrics = "  ".join(f"{key}={value:.4f}" for key, value in ordered_metrics(record["metrics"]))
    typer.echo(f"{record['method']} on {record['dataset']} ({record.get('eval_target', 'test')}): {metrics}")
    typer.echo(f"train {record['train_seconds']:.1f}s, {record['samples_per_sec']:.1f} samples/s, "
               f"peak {record['peak_memory_mb']:.0f} MB; {status} at {outcome.path}")


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
    from bench.distributed import is_main
    from bench.run import checked_config, run
    from bench.validate import check_seed

    chosen = [seed]
    if seeds is not None:
        try:
            chosen = [int(part) for part in seeds.split(",") if part.strip()]
        except ValueError:
            raise BenchError(f"--seeds {shown(seeds)}: expected comma-separated integers, e.g. 0,1,2") from None
        if not chosen or seed != 0:
            raise BenchError("--seeds: give a non-empty list, and not together with --seed")
        config = _config()
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
                      **({"log": _stderr} if json_ else {}))
        recorded = recorded and outcome.reused
        if json_:
            documents.append({"path": str(outcome.path), "recorded": outcome.reused} if dry_run else
                             {"path": str(outcome.path), "status": "reused" if outcome.reused else "recorded",
                              "record": outcome.record})
        elif dry_run:
            typer.echo(f"{'recorded' if outcome.reused else 'not recorded'}: {outcome.path}")
        elif is_main():  # under torchrun, rank 0 speaks for all
            _print_record(outcome)
    if json_ and is_main():
        _echo_json(documents if seeds is not None else documents[0])
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

    from bench.run import checked_config, run

    axes = []
    for entry in grid:
        key, sep, values = entry.partition("=")
        if not sep or not values:
            raise BenchError(f"--grid {shown(entry)}: expected section.key=v1,v2,...")
        axes.append([f"{key}={value}" for value in values.split(",")])
    config = _config()
    points = list(itertools.product(*axes))
    for point in points:
        checked_config(config, method, overrides=[*(set_ or []), *point], preset=preset, model=model, device=device,
                       seed=seed, max_train_minutes=max_train_minutes)
    for point in points:
        typer.echo("== " + " ".join(point))
        outcome = run(method, dataset, overrides=[*(set_ or []), *point], preset=preset, model=model,
                      device=device, seed=seed, force=force, max_train_minutes=max_train_minutes,
                      results_dir=results_dir, threads=threads, config=config)
        _print_record(outcome)


def _prepare(name: str, force: bool = False):
    from bench.data.prepare import prepare
    from bench.run import run_paths

    paths = run_paths(_config())
    return prepare(name, paths.data_dir, paths.cache_dir, force=force)


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
    _, info = _prepare(name, force)
    typer.echo(f"{name}: {info['users']} users, {info['items']} items, {info['interactions']} interactions; "
               f"split {info['split']} ({info['split_hash']}); cached at {info['cache']}")


@data_app.command("info")
def data_info(name: str) -> None:
    """Counts, average length, title coverage and split of a dataset; checks the card's expected counts."""
    from bench.data.cards import load_card
    from bench.data.prepare import count_mismatches
    from bench.run import run_paths

    _, info = _prepare(name)
    for key in ("dataset", "source_format", "origin", "users", "items", "interactions", "avg_length",
                "max_length", "title_kind", "items_with_title", "title_coverage_items",
                "title_coverage_interactions", "split", "split_hash", "valid_requests", "test_requests"):
        typer.echo(f"{key:28s} {info.get(key)}")
    mismatches = count_mismatches(name, info, run_paths(_config()).data_dir)
    if mismatches:
        raise BenchError(f"{name}: counts differ from the dataset card (expected, got): {mismatches}")
    if load_card(name, run_paths(_config()).data_dir).expected:
        typer.echo("counts match the dataset card")


@data_app.command("download")
def data_download(name: str) -> None:
    """Download the raw Amazon files a card lists into the data dir (needs a network)."""
    from bench.data.prepare import download
    from bench.run import run_paths

    for path in download(name, run_paths(_config()).data_dir):
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
    from bench.backbone import model_dir, save_random_backbone
    from bench.run import run_paths

    tokenizer_dir = model_dir(tokenizer, run_paths(_config()).cache_dir) if tokenizer == "smollm2" else Path(tokenizer)
    path = save_random_backbone(out, tokenizer_dir, hidden=hidden, layers=layers, seed=seed)
    typer.echo(f"wrote {path} (random weights, hidden {hidden}, {layers} layers, seed {seed}); use --model {path}")


@cache_app.command("ls")
def cache_ls(json_: JsonOption = False) -> None:
    """Every run's work dir with its size, and whether its record exists (else it is a resume point)."""
    from bench.cache import work_dirs
    from bench.run import run_paths

    paths = run_paths(_config())
    entries = work_dirs(paths.cache_dir, paths.results_dir)
    if json_:
        _echo_json([{"path": str(e.path), "dataset": e.dataset, "run": e.run, "bytes": e.bytes,
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
    from bench.cache import clean, work_dirs
    from bench.run import run_paths

    paths = run_paths(_config())
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


@app.command("leaderboard")
def leaderboard_command(
    results_dir: Annotated[Path | None, typer.Option(help="Records folder (default results/)")] = None,
    strict: Annotated[bool, typer.Option(help="Fail on a corrupt record instead of skipping it")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the files written, not the tables")] = False,
) -> None:
    """Build results/leaderboard.md, .csv, plots/ and README.md from recorded runs and speed records."""
    from bench.leaderboard import write_leaderboard
    from bench.results import check_writable
    from bench.run import run_paths

    paths = run_paths(_config(), results_dir)
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
    from bench.compare import compare, render, resolve_record
    from bench.leaderboard import method_label
    from bench.run import run_paths

    paths = run_paths(_config(), results_dir)
    first = resolve_record(run_a, paths.results_dir, dataset)
    second = resolve_record(run_b, paths.results_dir, dataset)
    result = compare(first, second, position)
    if json_:
        _echo_json({"a": {"label": method_label(first[1]), "record": str(first[0])},
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
    from bench.compare import resolve_record
    from bench.leaderboard import method_label
    from bench.run import run_paths

    path, found = resolve_record(record, run_paths(_config(), results_dir).results_dir, dataset)
    typer.echo("\n".join(render_record(path, found, method_label(found))))


def render_record(path: Path, record: dict, label: str) -> list[str]:
    """The facts a reader asks of one run first, in the order they ask; everything else is in the JSON."""
    from bench.demo import training_text

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
             + f"; evaluation {record.get('eval_seconds')} s, {record.get('samples_per_sec')} samples/s",
             f"memory:     inference peak {record.get('peak_memory_mb')} MB, training peak "
             f"{record.get('train_peak_memory_mb')} MB",
             f"run:        seed {record.get('seed')}, device {record.get('device')}, budget "
             f"{record.get('max_train_minutes') or 'none'} min, config hash {record.get('config_hash')}",
             f"made:       {record.get('created')} at {record.get('git_rev')}",
             "settings:   " + (", ".join(f"{k}={v}" for k, v in sorted(own.items())) or "none")]
    if info.get("deviations"):
        lines.append(f"deviations: {info['deviations']}")
    return lines


@app.command("rescore")
def rescore_command(
    records: Annotated[list[Path], typer.Argument(help="Record files made before per-request ranks were stored")],
    threads: ThreadsOption = None,
) -> None:
    """Attach per-request ranks to older records by scoring their own trained weights again; attached only
    when they reproduce every recorded metric exactly."""
    from bench.rescore import rescore
    from bench.resources import set_torch_threads
    from bench.results import read_record

    set_torch_threads(threads)
    config = _config()
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
    from bench.leaderboard import render_speed
    from bench.speed import measure_speed
    from bench.validate import check_seed

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
    from bench.smoke import smoke

    smoke([m.strip() for m in methods.split(",") if m.strip()], device, model=model, log=typer.echo)


DEMO_NOTE = ("Each method's strongest converged record on these requests (the demo's own runs, or better ones\n"
             "recorded here); every row and the published numbers: results/README.md")


BASELINES = ("pop", "sasrec_native", "gru4rec", "sasrec")


@app.command("baselines")
def baselines_command(
    dataset: Annotated[str, typer.Option(help="Dataset card name (see `bench list`)")],
    only: Annotated[str | None, typer.Option(help=f"Comma-separated subset of {', '.join(BASELINES)}")] = None,
    threads: ThreadsOption = None,
    seed: int = 0,
    max_train_minutes: Annotated[float | None, typer.Option(help="Budget per method in minutes (default or 0: "
                                                                 "none, i.e. train to early stopping)")] = None,
    results_dir: Annotated[Path | None, typer.Option(help="Where records go (default results/)")] = None,
    force: Annotated[bool, typer.Option(help="Re-run methods that already have an identical record")] = False,
) -> None:
    """The ID baselines to compare a new method against, trained one after another to early stopping
    (cheapest first; recorded runs are reused, interrupted RecBole and native SASRec runs resume)."""
    from bench.leaderboard import render_compact, write_leaderboard
    from bench.run import checked_config, run, run_paths

    names = [n.strip() for n in only.split(",")] if only else list(BASELINES)
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise BenchError(f"--only {shown(unknown[0])}: expected some of {', '.join(BASELINES)}."
                         f"{did_you_mean(unknown[0], BASELINES)}")
    config = _config()
    for name in names:  # every method's settings checked before the first one trains
        checked_config(config, name, seed=seed, max_train_minutes=max_train_minutes)
    records = []
    for name in names:
        typer.echo(f"== {name} on {dataset}")
        outcome = run(name, dataset, config=config, threads=threads, seed=seed, max_train_minutes=max_train_minutes,
                      results_dir=results_dir, force=force)
        _print_record(outcome)
        records.append(outcome.record)
    written = write_leaderboard(run_paths(config, results_dir).results_dir)
    typer.echo("\n".join(render_compact(records)))
    typer.echo(f"full tables: {written.paths[0]}")


@app.command("demo")
def demo_command(
    only: Annotated[str | None, typer.Option(help="Comma-separated subset of the [demo] methods")] = None,
) -> None:
    """The main job: run (or reuse) the [demo] runs of bench.toml on real data and print the table once."""
    from bench.demo import choose_rows, render_demo
    from bench.leaderboard import write_leaderboard
    from bench.results import iter_records
    from bench.run import run, run_paths

    config = _config()
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
            _print_record(outcome)
        records.append(outcome.record)
    results_dir = run_paths(config).results_dir
    written = write_leaderboard(results_dir)
    table = choose_rows(records, [record for _, record in iter_records(results_dir)])
    if missing:
        typer.echo(f"\n== demo on {dataset}: every run recorded")
    typer.echo("\n".join(render_demo(table)))
    typer.echo(DEMO_NOTE)
    typer.echo(f"full tables: {written.paths[0]}")


INTERRUPTED = "interrupted: nothing was recorded for the unfinished run"
EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143  # 128 + SIGINT, 128 + SIGTERM, as a shell reports them
_terminated: list[int] = []


def _terminate_like_ctrl_c(signum: int, frame: object) -> None:
    """SIGTERM (kill, a scheduler's time limit, docker stop) unwinds as Ctrl-C does, so the same `finally`
    blocks release the locks and no partial record is written; only the exit code differs."""
    _terminated.append(signum)
    raise KeyboardInterrupt


def _interrupted_code() -> int:
    typer.echo(INTERRUPTED, err=True)
    return EXIT_TERMINATED if _terminated else EXIT_INTERRUPTED


def _click_exceptions(name: str) -> tuple[type[BaseException], ...]:
    """The class `name` from click and from the copy of click that typer bundles (typer >= 0.25 raises
    its own copies, which `except click.X` would miss)."""
    import click

    modules: list = [click.exceptions]
    try:
        from typer._click import exceptions as bundled

        modules.append(bundled)
    except ImportError:  # an older typer that uses click itself
        pass
    return tuple(cls for module in modules if (cls := getattr(module, name, None)) is not None)


def main() -> None:
    """Exit codes: 0 done, 1 a check said no (e.g. `run --dry-run`), 2 bad input or usage, 130 Ctrl-C,
    143 SIGTERM."""
    import signal

    from bench.progress import quiet_third_party_output

    quiet_third_party_output()  # in a log: no third-party bars, no warnings known to be harmless here

    signal.signal(signal.SIGTERM, _terminate_like_ctrl_c)
    try:
        code = app(standalone_mode=False, prog_name="bench")
    except BenchError as error:
        typer.echo(f"error: {error}", err=True)
        sys.exit(2)
    except (KeyboardInterrupt, *_click_exceptions("Abort")):
        sys.exit(_interrupted_code())
    except _click_exceptions("ClickException") as error:
        error.show()  # click's short usage message, no traceback
        sys.exit(error.exit_code)
    except _click_exceptions("Exit") as error:
        sys.exit(error.exit_code)
    # Without standalone mode typer returns Ctrl-C as 130 and typer.Exit(n) as n instead of raising.
    if code == EXIT_INTERRUPTED:
        code = _interrupted_code()
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
