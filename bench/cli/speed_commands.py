"""`bench speed`: several methods timed in one process on the same seeded requests, as the speed tables and the
speed-accuracy frontier need (a module of its own: the run commands' module was full)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bench.cli.common import SetOption, ThreadsOption, app


@app.command("speed")
def speed_command(
    dataset: Annotated[str, typer.Option(help="Dataset card name")] = "beauty",
    methods: Annotated[str, typer.Option(help="Comma-separated methods, measured in this order")] = "cove,bigrec",
    device: Annotated[str, typer.Option(help="cpu or cuda")] = "cpu",
    num_prompts: Annotated[int, typer.Option(help="Seeded evaluation requests, the same for every method")] = 32,
    repeats: Annotated[int, typer.Option(help="Timed passes per method (median, min, max reported)")] = 3,
    batch_size: Annotated[int, typer.Option(help="Requests per score() call; 1 = the CoVE paper's setting")] = 1,
    set_: SetOption = None,
    preset: Annotated[list[str] | None, typer.Option(
        help="Quick-fit a method as a bench.toml preset names it: METHOD=NAME (repeat per method), e.g. cove=cpu, "
             "so its speed stands beside that preset's accuracy row")] = None,
    model: Annotated[str | None, typer.Option(help="Backbone for methods that have one")] = None,
    full_fit: Annotated[bool, typer.Option(help="Fit with full settings instead of the quick fit")] = False,
    trained: Annotated[bool, typer.Option(
        help="Reuse each method's recorded trained weights (its best recorded run whose work dir is still here); "
             "methods without one get the quick fit")] = False,
    records: Annotated[str | None, typer.Option(
        help="Comma-separated run records whose trained weights to reuse (one per method; wins over "
             "--trained)")] = None,
    threads: ThreadsOption = None,
    seed: int = 0,
    results_dir: Annotated[Path | None, typer.Option(help="Where results/speed/ goes (default results/)")] = None,
    label: Annotated[str | None, typer.Option(
        help="Name of this comparison (e.g. same_backbone), added to the record's file name so it does not "
             "replace the main speed record")] = None,
    precision: Annotated[str | None, typer.Option(help="fp32, bf16 or auto for every fitted method with a backbone "
                                                       "(bf16 against fp32 is no speed comparison)")] = None,
) -> None:
    """Inference samples/sec of several methods in one process on the same requests; records speed JSON."""
    from bench.report.speed_tables import render_speed
    from bench.runs.speed import measure_speed
    from bench.runs.validate import check_seed

    check_seed(seed)
    outcome = measure_speed(dataset, [m.strip() for m in methods.split(",") if m.strip()], device=device,
                            num_prompts=num_prompts, repeats=repeats, batch_size=batch_size, overrides=set_ or [],
                            presets=preset or [], model=model, quick_fit=not full_fit, trained=trained,
                            precision=precision,
                            records=[Path(r.strip()) for r in (records or "").split(",") if r.strip()],
                            threads=threads, seed=seed, results_dir=results_dir, label=label, log=typer.echo)
    typer.echo("\n".join(render_speed([outcome.record])))
    typer.echo(f"wrote {outcome.path}")
