"""The inference-speed tables of `bench speed` records (results/speed/*.json)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.report.formatting import fmt_number, markdown_table
from bench.store.results import read_json_files

Record = dict[str, Any]


def load_speed(results_dir: Path) -> list[Record]:
    """Speed records written by `bench speed` (results/speed/*.json), sorted by file name."""
    return [record for _, record in read_json_files(results_dir / "speed")]


def speed_order(record: Record) -> list[str]:
    """Methods in the order they were measured (the JSON file itself has sorted keys)."""
    order = [m for m in record.get("measured_in_order") or [] if m in record["methods"]]
    return order + sorted(m for m in record["methods"] if m not in order)


def weights_text(entry: Record, record: Record) -> str:
    """Which weights a speed entry was timed with: trained (a recorded run's), quick-fit or full-fit.
    Records made before entries said so had one kind for every method (their config says which)."""
    kind = (entry.get("weights") or {}).get("kind")
    if kind is None and "config" in record:
        kind = "quick_fit" if record["config"].get("quick_fit") else "full_fit"
    return (kind or "–").replace("_", "-")


def device_text(record: Record) -> str:
    """The device kind, with the process count of a torchrun launch (e.g. "cuda x4 (nccl)")."""
    device = str(record.get("device"))
    world = (record.get("distributed") or {}).get("world_size", 1)
    return device if world == 1 else f"{device} x{world} ({record['distributed'].get('backend')})"


def render_speed(speed: list[Record]) -> list[str]:
    lines = ["## Inference speed", "",
             "Measured by `bench speed`: all methods in one process, on the same seeded requests and "
             "hardware; warm-up excluded; median (min–max) over repetitions. Tokens processed per request: "
             "its prompt without padding, plus steps × beams for beam search (methods that report it).", ""]
    for record in speed:
        hardware = record.get("hardware", {}).get("name") or record.get("device")
        kinds = " / ".join(sorted({weights_text(e, record) for e in record["methods"].values()}))
        label = f" · {str(record['label']).replace('_', ' ')}" if record.get("label") else ""
        lines += [f"### {record['dataset']} · {record['device']} ({hardware}) · batch {record.get('batch_size')} · "
                  f"{kinds} weights{label}", "",
                  f"{record.get('num_prompts')} requests × {record.get('repeats')} repetitions, batch size "
                  f"{record.get('batch_size')}, {record.get('hardware', {}).get('torch_threads', '?')} torch "
                  f"thread(s), backbone {record.get('backbone') or '–'}; "
                  f"{record.get('weights', '')}", ""]
        header = ["method", "weights", "precision", "samples/s (median)", "min–max", "peak memory MB",
                  "process before load MB",
                  "generated tokens/sample (cap)", "tokens processed/request", "machine load (1 min)"]
        rows = []
        capped = []
        for name in speed_order(record):
            entry = record["methods"][name]
            speed_ = entry["samples_per_sec"]
            load = entry.get("load_average_1min") or {}
            if length_set_by_cap(entry):
                capped.append(name)
            recorded = (entry.get("weights") or {}).get("record")
            weights = weights_text(entry, record) + (f" ({Path(recorded).stem})" if recorded else "")
            setting = (entry.get("method_info") or {}).get("setting")
            rows.append([f"{name}[{setting}]" if setting else name, weights, precision_of(record, name) or "–",
                         fmt_number(speed_["median"]),
                         f"{fmt_number(speed_['min'])}–{fmt_number(speed_['max'])}",
                         fmt_number(entry.get("peak_memory_mb")), fmt_number(entry.get("process_baseline_mb")),
                         decoding_text(entry),
                         fmt_number((entry.get("method_info") or {}).get("tokens_per_request")),
                         f"{fmt_number(load.get('before'))}→{fmt_number(load.get('after'))}" if load else "–"])
        lines += markdown_table(header, rows)
        lines += speed_ratio_lines(record)
        lines.append("")
    return lines


def known_precision(info: Record | None, section: Record | None, method: str, device: str) -> str | None:
    """The number format a model ran in: what its method said (method_info.precision); for a CPU run from
    before methods said so, its configured fp32 (or the hash-neutral value that stands for it), which a CPU
    always runs as asked; None where it cannot be known (no backbone, "auto" or bf16 unresolved, CUDA)."""
    from bench.config import section_neutral
    from bench.report.labels import bench_defaults

    if (info or {}).get("precision"):
        return str((info or {})["precision"])
    wanted = (section or {}).get("precision", section_neutral(bench_defaults(), method).get("precision"))
    return "fp32" if wanted == "fp32" and str(device).startswith("cpu") else None


def precision_of(record: Record, name: str) -> str | None:
    """The number format a speed record's method ran in (known_precision of its entry and config)."""
    section = ((record.get("config") or {}).get("methods") or {}).get(name, {}).get(name)
    return known_precision(record["methods"][name].get("method_info"), section, name, str(record.get("device")))


def mixed_precision(record: Record, a: str, b: str) -> bool:
    """Two methods whose number formats are both known and differ: their ratio mixes formats."""
    first, second = precision_of(record, a), precision_of(record, b)
    return bool(first and second and first != second)


def entry_label(name: str, entry: Record) -> str:
    setting = (entry.get("method_info") or {}).get("setting")
    return f"{name}[{setting}]" if setting else name


def speed_ratios(record: Record) -> list[tuple[str, str, float]]:
    """(first, other, median samples/s of the first over the other's) for every generative method measured
    after the first: the comparison a speed run is made for (a method that ranks in one step against one
    that decodes). Computed from the entries, so records of any age read alike."""
    order = speed_order(record)
    first = record["methods"][order[0]]["samples_per_sec"]["median"]
    return [(order[0], name, first / record["methods"][name]["samples_per_sec"]["median"]) for name in order[1:]
            if record["methods"][name].get("generated_tokens_per_sample") is not None
            and record["methods"][name]["samples_per_sec"]["median"]]


def parameters(entry: Record) -> int | None:
    info = entry.get("method_info") or {}
    return info.get("backbone_params") or info.get("parameters")


def speed_ratio_lines(record: Record) -> list[str]:
    """One sentence per ratio: what a fixed decoding length was (TIGER-style semantic IDs: the same on every
    beam), and why it is no headline where it is not (the two ran in different precisions, or decoding stopped
    at its token cap)."""
    lines = []
    for first, other, ratio in speed_ratios(record):
        a, b = entry_label(first, record["methods"][first]), entry_label(other, record["methods"][other])
        entry = record["methods"][other]
        notes, caveats = [], []
        if mixed_precision(record, first, other):
            caveats.append(f"{first} ran in {precision_of(record, first)}, {other} in {precision_of(record, other)}, "
                           "so the ratio mixes number formats; `bench speed --precision` runs them alike")
        if length_set_by_cap(entry):
            # The generative method's time was set by its token cap, not by its weights: the ratio moves with it.
            caveats.append(f"{other} hit the max_new_tokens cap on most requests, so the ratio moves with the cap")
        elif _decoding(entry)["fixed"]:
            sizes = (f"; parameters: {first} {parameters(record['methods'][first]):,}, {other} "
                     f"{parameters(entry):,}" if parameters(record["methods"][first]) and parameters(entry) else "")
            notes.append(f"{b}'s decoding length is fixed: {_decoding(entry)['fixed']}{sizes}")
        value = f"{fmt_number(ratio)}×" if caveats else f"**{fmt_number(ratio)}×**"
        said = "; ".join(["medians", *notes, *(["not a headline: " + "; ".join(caveats)] if caveats else [])])
        lines += ["", f"{a} / {b} samples/s: {value} ({said})."]
    return lines


def _decoding(entry: Record) -> dict[str, Any]:
    info = entry.get("method_info") or {}
    return {"tokens": entry.get("generated_tokens_per_sample"), "cap": info.get("max_new_tokens"),
            "capped": info.get("generated_at_cap_fraction"), "fixed": info.get("decode_length_fixed")}


def length_set_by_cap(entry: Record) -> bool:
    """A generative method whose decoding stopped at max_new_tokens on most requests (or, in records
    that predate the per-request count, averaged within 10% of the cap), unless the length was fixed
    on purpose."""
    d = _decoding(entry)
    if d["tokens"] is None or d["cap"] is None or d["fixed"]:
        return False
    if d["capped"] is not None:
        return d["capped"] > 0.5
    return d["tokens"] >= 0.9 * d["cap"]


def decoding_text(entry: Record) -> str:
    """Generated tokens per sample next to the cap: '60.5 (cap 64)' or '12 (fixed)'."""
    d = _decoding(entry)
    if d["tokens"] is None:
        return "–"
    if d["fixed"]:
        return f"{fmt_number(d['tokens'])} (fixed length)"
    return f"{fmt_number(d['tokens'])} (cap {d['cap']})" if d["cap"] is not None else fmt_number(d["tokens"])
