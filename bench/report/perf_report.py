"""results/perf/*.json (written by benchmarks/*.py through bench.store.perf) as tables in results/README.md:
each benchmark's rows as they were measured, with the machine, its threads and whether it was busy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.report.formatting import markdown_table
from bench.store.results import read_json_files

# What each benchmark measures, for the table's heading (a benchmark without an entry is shown by name).
PERF_TITLES = {
    "beam_decoding": "Beam search with the prompt shared by its beams vs Hugging Face's plain beam search "
                     "(`benchmarks/beam_decoding.py`): seconds per request, same beams",
    "cove_flops": "CoVE scoring against the machine's matmul peak (`benchmarks/cove_flops.py`): tokens/s, "
                  "GFLOP/s and the fraction of the peak, eager and torch.compile'd",
    "cove_scale": "CoVE on synthetic catalogues up to 10M items (`benchmarks/cove_scale.py`): scoring requests/s "
                  "(every item ranked), training-step seconds and peak RSS per item count and compression ratio",
    "cove_train_speed": "CoVE training against the machine's matmul peak (`benchmarks/cove_train_speed.py`): "
                        "tokens/s of the `cpu` preset's step (forward, backward, AdamW) in fp32 and bf16",
}


def cell(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return "–" if value is None else str(value)


def render_perf(results_dir: Path) -> list[str]:
    records = read_json_files(results_dir / "perf")
    if not records:
        return []
    lines = ["## Performance benchmarks", "",
             "Figures printed by `benchmarks/*.py` and kept in `perf/`; a machine that was busy with other jobs "
             "while measuring is said so (its absolute figures are lower bounds; ratios measured side by side "
             "hold better).", ""]
    for path, record in records:
        benchmark = str(record.get("benchmark") or path.stem.rsplit("-", 1)[0])
        hardware = record.get("hardware") or {}
        busy = " · **machine busy with other jobs**" if record.get("cpu_shared_with_other_jobs") else ""
        lines += [f"### {PERF_TITLES.get(benchmark, benchmark)}", "",
                  f"`perf/{path.name}` · {hardware.get('name', '?')} · {record.get('threads', '?')} thread(s) · "
                  f"{str(record.get('created', '?'))[:10]}{busy}", ""]
        rows = record.get("rows") or []
        columns = list(dict.fromkeys(key for row in rows for key in row))
        lines += [*markdown_table(columns, [[cell(row.get(c)) for c in columns] for row in rows]), ""]
    return lines
