"""What every `bench` command shares: the Typer apps, the common options and the output helpers.
Imports stay lazy so `bench --help` and `bench list` never load torch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

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


def echo_json(value: object) -> None:
    typer.echo(json.dumps(value, indent=2, sort_keys=True, default=str))


def to_stderr(message: str) -> None:
    """Progress lines when stdout carries JSON."""
    typer.echo(message, err=True)


def ordered_metrics(metrics: dict[str, float]) -> list[tuple[str, float]]:
    """NDCG then HR, each by increasing K (a plain sort puts hr@10 before hr@5)."""
    def key(item: tuple[str, float]) -> tuple[int, str, int]:
        name, _, k = item[0].partition("@")
        return ({"ndcg": 0, "hr": 1}.get(name, 2), name, int(k) if k.isdigit() else 0)

    return sorted(metrics.items(), key=key)


def bench_config():
    from bench.config import load_config

    return load_config()


def print_record(outcome: Any) -> None:
    record = outcome.record
    status = "reused" if outcome.reused else "recorded"
    metrics = "  ".join(f"{key}={value:.4f}" for key, value in ordered_metrics(record["metrics"]))
    typer.echo(f"{record['method']} on {record['dataset']} ({record.get('eval_target', 'test')}): {metrics}")
    from bench.report.labels import scoring_speed

    speed = scoring_speed(record)
    speed_text = f"{speed:.1f} samples/s" if speed is not None else "no samples/s (generations reused)"
    typer.echo(f"train {record['train_seconds']:.1f}s, {speed_text}, "
               f"peak {record['peak_memory_mb']:.0f} MB; {status} at {outcome.path}")
