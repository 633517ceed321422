"""`bench data`, `bench backbone` and `bench cache`: datasets, local backbones and work dirs."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from bench.cli.common import (
    JsonOption,
    backbone_app,
    bench_config,
    cache_app,
    data_app,
    echo_json,
)
from bench.errors import BenchError


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
