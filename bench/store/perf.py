"""Benchmark figures under results/perf/<benchmark>-<machine>.json: what `benchmarks/*.py` measured, with the
machine, its threads and how busy it was, so `bench leaderboard` can show them beside the run tables."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PERF_FOLDER = Path("results/perf")


def machine_slug(name: str) -> str:
    """'AMD EPYC, 2 cores' -> 'amd_epyc_2c': the machine part of a perf file's name (the core count too, so
    two machines of one CPU family keep files of their own)."""
    cpu, _, rest = name.partition(",")
    cores = "".join(ch for ch in rest if ch.isdigit())
    slug = cpu.strip().replace(" ", "_").replace("(", "").replace(")", "").lower()
    return f"{slug}_{cores}c" if cores else slug


def busy(busy_before: float | None, cores: int | None) -> bool:
    """Other jobs held the CPU when the benchmark started: the cores they kept busy just before it
    (bench.train.resources.busy_cores), over half the cores."""
    return busy_before is not None and busy_before > 0.5 * max(1, cores or 1)


def write_perf(benchmark: str, rows: list[dict[str, Any]], busy_before: float | None, *,
               folder: Path = PERF_FOLDER, variant: str | None = None, **facts: Any) -> Path:
    """Write one benchmark's rows atomically; `facts` (model, threads, ...) go beside them. A machine busy
    with other jobs when it started (`busy`, from `busy_cores()` taken before it) is said so: its figures are
    lower bounds. A `variant` (e.g. the backbone) gets a file of its own, so a quick run never replaces the
    real one."""
    from bench.atomic import atomic_write_text
    from bench.store.results import now_iso
    from bench.train.precision import cpu_supports_bf16
    from bench.train.resources import hardware_info, load_average

    after = load_average()
    native_bf16 = cpu_supports_bf16()  # one CPU family comes with and without it: files of their own
    hardware = {**hardware_info("cpu"), "native_bf16": native_bf16,
                "busy_cores_before": busy_before, "load_average_1min": {"after": after}}
    name = f"{benchmark}_{variant}" if variant else benchmark
    path = folder / f"{name}-{machine_slug(hardware['name'])}{'_bf16' if native_bf16 else ''}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"benchmark": benchmark, "created": now_iso(), **facts, "hardware": hardware,
              "cpu_shared_with_other_jobs": busy(busy_before, hardware.get("cpu_count")), "rows": rows}
    atomic_write_text(path, json.dumps(record, indent=1) + "\n")
    return path
