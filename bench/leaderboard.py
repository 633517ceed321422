"""Comparison tables from recorded runs only (results/runs/*/*.json).

Rows are grouped so that only comparable numbers share a table: same dataset split, same
evaluated position, same history masking and the same evaluated requests. Published numbers
(results/reference/*.csv) are shown beside ours in their own block and never ranked against
them. Output is a pure function of the files read: regenerating gives identical bytes.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.config import config_path, load_config, method_config
from bench.errors import BenchError
from bench.metrics import METRIC_NAMES, per_request_metrics
from bench.request_ranks import load_ranks
from bench.results import atomic_write_text, iter_records, read_json_files
from bench.scale_report import load_scale, render_scale
from bench.significance import ALPHA, SIGN_FLIPS, bootstrap_ci, holm, sign_flip_p_values
from bench.textfiles import read_text

METRIC_COLUMNS = METRIC_NAMES
METRIC_TITLES = {"ndcg@5": "NDCG@5", "ndcg@10": "NDCG@10", "ndcg@20": "NDCG@20",
                 "hr@5": "HR@5", "hr@10": "HR@10", "hr@20": "HR@20"}
POSITION_TEXT = {"test": "last item (test)", "valid": "second-to-last item (valid)"}
SPLIT_POSITION_TEXT = {"test": "test split (global time)", "valid": "validation split (global time)"}
REFERENCE_COLUMNS = ("dataset", "method", "compression_ratio", "eval_target", "source")
PROTOCOL_LINE = ("Full ranking over every item; one relevant item per request; ties count against the "
                 "target. Bold = best in its table (only rows scored on the same requests share a table), and "
                 "every row whose paired difference from the best is not significant (two-sided paired randomisation "
                 f"(sign-flip) test on per-request values, exact or from {SIGN_FLIPS:,} seeded sign flips, "
                 "Holm-corrected within the table, α = 0.05). ± = half-width of the 95 % bootstrap interval over "
                 "requests (1,000 seeded resamples). Both need per-request ranks: † marks a value not tested "
                 "against its column's best (this row or the best has none, or they were scored on other "
                 "requests), never bold whatever its value. Runs that differ only by seed share one row: the mean "
                 "over seeds, `sd` its standard deviation, the seed column says how many; its ± and test use the "
                 "per-request values averaged over the seeds.")
UNTESTED_MARK = "†"
UNTESTED_NOTE = (f"{UNTESTED_MARK} untested: this row or the column's best has no per-request ranks (or they were "
                 "scored on other requests), so it is not bold whatever its value; `bench rescore` adds ranks to "
                 "older records.")

Record = dict[str, Any]
Row = dict[str, Any]


@dataclass
class WrittenLeaderboard:
    markdown_text: str
    paths: list[Path]


@dataclass(frozen=True)
class Group:
    """Rows in one group were scored on exactly the same requests, so they may be ranked."""

    target: str
    mask_history: bool
    requests: int
    requests_total: int
    protocol: str = "leave_one_out"

    def sort_key(self) -> tuple:
        return (self.target != "test", self.mask_history, -self.requests)

    def title(self) -> str:
        names = POSITION_TEXT if self.protocol == "leave_one_out" else SPLIT_POSITION_TEXT
        parts = [names.get(self.target, self.target)]
        if self.requests < self.requests_total:
            parts.append(f"seeded subsample of {self.requests:,} of {self.requests_total:,} requests")
        else:
            parts.append(f"all {self.requests:,} requests")
        if self.mask_history:
            parts.append("history items masked")
        return " · ".join(parts)

    def slug(self) -> str:
        """Short stable name for file names (plots)."""
        slug = self.target + ("-masked" if self.mask_history else "")
        return slug + (f"-sub{self.requests}" if self.requests < self.requests_total else "")


def record_group(record: Record) -> Group:
    sub = record.get("subsample") or {}
    requests = int(record.get("num_eval_requests") or sub.get("eval_requests") or 0)
    total = int(sub.get("eval_requests_total") or requests)
    return Group(record.get("eval_target", "test"), bool(record.get("mask_history", False)), requests, total,
                 record.get("split_protocol", "leave_one_out"))


def compression_ratio(record: Record) -> Any:
    """The CoVE compression ratio (config.<method>.compression_ratio), None for other methods."""
    return (record.get("config", {}).get(record["method"]) or {}).get("compression_ratio")


def _train_scope(record: Record) -> str:
    sub = record.get("subsample") or {}
    bits = []
    if sub.get("eval_requests") is not None and sub.get("eval_requests") != sub.get("eval_requests_total"):
        bits.append(f"eval {sub['eval_requests']}/{sub['eval_requests_total']}")
    if sub.get("train"):
        bits.append("train " + ",".join(f"{k}={v}" for k, v in sorted(sub["train"].items())))
    return "subsample (" + "; ".join(bits) + ")" if bits else "full"


def _training(record: Record) -> str:
    """Epochs run of the maximum and why training stopped, so an undertrained row is visible."""
    info = record.get("method_info") or {}
    nested = info.get("training") if isinstance(info.get("training"), dict) else {}
    ran = info.get("epochs_run", nested.get("epochs_done", nested.get("epochs_completed")))
    most = info.get("epochs_max", (record.get("config", {}).get(record["method"]) or {}).get("epochs"))
    stopped = info.get("stopped_by", nested.get("stopped_by"))
    if ran is None:
        return "–"
    text = f"{ran}/{most} epochs" if most is not None else f"{ran} epochs"
    text = f"{text}, stopped by {stopped}" if stopped else text
    resumed = nested.get("resumed_after_epoch", info.get("resumed_after_epoch"))
    if resumed is not None:
        text = f"{text} (resumed after epoch {resumed}; train s counts this call only)"
    return f"{text}; shared the machine with other runs (--parallel)" if record.get("exclusive") is False else text


# Keys that never change the numbers of a row (prompts per forward pass; how many requests are scored, which
# the table and data column already say): no difference in labels, nor between runs "identical in effect".
NO_EFFECT_KEYS = {"eval": frozenset({"batch_size", "max_eval_users", "extra_targets"}),
                  "method": frozenset({"eval_batch_size", "max_eval_users"})}
# Keys another column shows (ratio, backbone, data): left out of the label to keep it short.
SHOWN_ELSEWHERE = frozenset({"compression_ratio", "model", "max_train_users"})
# Short forms for labels; any other key is shown as it is spelled in bench.toml.
KEY_SHORT = {"learning_rate": "lr", "batch_size": "bs", "train_batch_size": "bs", "grad_accum": "accum",
             "weight_decay": "wd", "train_samples": "samples", "use_titles": "titles", "max_history": "history",
             "max_title_words": "title_words", "max_seq_length": "seq_len", "max_new_tokens": "new_tokens",
             "hidden_size": "hidden", "embedding_size": "emb", "num_hashes": "k", "max_train_minutes": "minutes",
             "stopping_step": "patience", "hidden_dropout_prob": "dropout", "attn_dropout_prob": "attn_dropout"}
# Flags a method puts in method_info.setting that restate one config value: where the record holds that key,
# the label shows it as an override of the preset (or not at all), so `cpu_titles` never meets `id-only`.
SETTING_FLAG_KEYS = {"id-only": "use_titles"}
LABEL_VALUE_CHARS = 12


@functools.lru_cache(maxsize=4)
def _bench_config(path: str) -> dict[str, Any]:
    return load_config(Path(path))


def bench_defaults() -> dict[str, Any]:
    """bench.toml (BENCH_CONFIG, ./bench.toml or the repo's), or {} where there is none: labels then fall back
    to the method's own setting."""
    path = config_path()
    return _bench_config(str(path.resolve())) if path.exists() else {}


def _short_value(value: Any) -> str:
    """3e-3 rather than 0.003, on/off for flags, long strings and lists cut to LABEL_VALUE_CHARS."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        plain = f"{value:.4g}"
        mantissa, _, exponent = f"{value:.3e}".partition("e")
        compact = f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
        return compact if len(compact) < len(plain) else plain
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return text if len(text) <= LABEL_VALUE_CHARS else text[:LABEL_VALUE_CHARS - 1] + "…"


def _baseline(record: Record, config: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """(preset, bench.toml defaults plus that preset) the record's section is compared with. A record
    without a preset key whose method names a preset as its setting (tiger's small_t5, recorded before
    it was a preset) is compared with that preset, so a later default change does not flood its label."""
    method = record["method"]
    section = record.get("config", {}).get(method) or {}
    presets = (config.get(method) or {}).get("presets", {})
    setting = str((record.get("method_info") or {}).get("setting") or "").split(",")[0]
    preset = section.get("preset") or (setting if setting in presets else None)
    if method not in config:
        return preset, {}
    return preset, method_config(config, method, preset if preset in presets else None)[method]


def setting_overrides(record: Record, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Keys of the record's method section that differ from bench.toml's defaults plus its preset: what
    `--set` changed. Hash-neutral keys at their neutral value, keys without effect on the numbers, keys
    other columns show and keys the record or bench.toml lacks (added or retired since) are no difference."""
    config = bench_defaults() if config is None else config
    method = record["method"]
    _, base = _baseline(record, config)
    neutral = config.get("hash_neutral", {})
    section = record.get("config", {}).get(method) or {}
    return {key: value for key, value in sorted(section.items())
            if key in base and key != "preset" and key not in NO_EFFECT_KEYS["method"] and key not in SHOWN_ELSEWHERE
            and value != base[key] and neutral.get(f"{method}.{key}", object()) != value}


def method_label(record: Record, config: dict[str, Any] | None = None) -> str:
    """`method[setting,key=value,...]`: the setting the method reports (method_info.setting), else the
    preset, then every result-changing key that differs from that preset (short form), so two settings of
    one method (cove[paper], cove[default,lr=3e-3]) are never read as one row's method."""
    info = record.get("method_info") or {}
    section = record.get("config", {}).get(record["method"]) or {}
    parts = [part for part in str(info.get("setting") or section.get("preset") or "").split(",") if part]
    parts = [part for i, part in enumerate(parts) if i == 0 or SETTING_FLAG_KEYS.get(part) not in section]
    parts += [f"{KEY_SHORT.get(key, key)}={_short_value(value)}"
              for key, value in setting_overrides(record, config).items()]
    return f"{record['method']}[{','.join(parts)}]" if parts else record["method"]


def effect_key(record: Record, config: dict[str, Any] | None = None) -> str:
    """What decides a run's numbers besides its seed: the config without hash-neutral keys at their neutral
    value, keys without effect and the preset's name (its values are in the section), so runs identical in
    effect share one row."""
    config = bench_defaults() if config is None else config
    neutral = config.get("hash_neutral", {})
    method = record["method"]
    effective: dict[str, Any] = {}
    for name, section in (record.get("config") or {}).items():
        if not isinstance(section, dict):
            effective[name] = section
            continue
        ignored = NO_EFFECT_KEYS["eval" if name == "eval" else "method"]
        effective[name] = {key: value for key, value in section.items() if key != "preset" and key not in ignored
                           and neutral.get(f"{name}.{key}", object()) != value}
    return json.dumps([method, effective, record.get("max_train_minutes"), record.get("device"),
                       record.get("model_identity")], sort_keys=True, default=str)


def record_row(path: Path, record: Record, ranks: dict[str, Any] | None = None) -> Row:
    """One table row; `ranks` (bench.request_ranks.load_ranks) adds the per-request values of the row's
    position, which confidence intervals and paired tests need (private keys, never written out)."""
    scored = (ranks or {}).get(record.get("eval_target", "test"))
    values = None
    if scored is not None:
        per_request = per_request_metrics(scored[1], (5, 10, 20))
        values = np.stack([per_request[m] for m in METRIC_COLUMNS], axis=1)
    return {
        "_requests": None if scored is None else scored[0],
        "_values": values,
        "_same_but_seed": effect_key(record),
        "method": method_label(record),
        "backbone": (record.get("method_info") or {}).get("backbone"),
        "ratio": compression_ratio(record),
        **{metric: defined(record["metrics"].get(metric)) for metric in METRIC_COLUMNS},
        "position": record.get("eval_target", "test"),
        "data": _train_scope(record) + ("; " + record["position_note"] if record.get("position_note") else ""),
        "training": _training(record),
        "seed": record.get("seed"),
        "train_s": record.get("train_seconds"),
        "samples_per_sec": record.get("samples_per_sec"),
        "device": device_text(record),
        "date": str(record.get("created", ""))[:10],
        "record": f"{record['dataset']}/{path.name}",
    }


def check_split_hashes(records: list[tuple[Path, Record]]) -> None:
    """Refuse to compare records of one dataset made on different splits."""
    by_dataset: dict[str, dict[str, list[str]]] = {}
    for path, record in records:
        by_dataset.setdefault(record["dataset"], {}).setdefault(record["split_hash"], []).append(path.name)
    for dataset, hashes in sorted(by_dataset.items()):
        if len(hashes) > 1:
            listing = ", ".join(f"{h} ({', '.join(sorted(names))})" for h, names in sorted(hashes.items()))
            raise BenchError(f"dataset {dataset!r}: records were made on different splits: {listing}; "
                             "move the stale ones out of results/runs")


def other_positions(record: Record) -> list[Record]:
    """The same trained model scored at other positions (eval.extra_targets) as records of their own,
    so each lands in the table of its position; the data column says it is the same model."""
    views = []
    for target, scored in sorted((record.get("metrics_by_position") or {}).items()):
        # A subsampled run scored the same seeded subsample at every position: keep saying so.
        sub = record.get("subsample")
        views.append({**record, "eval_target": target, "metrics": scored["metrics"],
                      "num_eval_requests": scored["num_eval_requests"],
                      "subsample": None if sub is None else {**sub, "eval_requests": scored["num_eval_requests"]},
                      "position_note": scored.get("note")})
    return views


def leaderboard_rows(records: list[tuple[Path, Record]]) -> dict[str, dict[Group, list[Row]]]:
    """dataset -> comparable group -> rows, best NDCG@10 first; refuses mixed split hashes."""
    check_split_hashes(records)
    tables: dict[str, dict[Group, list[Row]]] = {}
    for path, record in records:
        groups = tables.setdefault(record["dataset"], {})
        try:
            ranks = load_ranks(path, record)
        except BenchError as error:  # the point estimates still stand; only the intervals are lost
            print(f"warning: {error}; no intervals for that row", file=sys.stderr)
            ranks = None
        for view in [record, *other_positions(record)]:
            groups.setdefault(record_group(view), []).append(record_row(path, view, ranks))
    ordered: dict[str, dict[Group, list[Row]]] = {}
    for dataset in sorted(tables):
        groups = tables[dataset]
        ordered[dataset] = {}
        for group in sorted(groups, key=Group.sort_key):
            ordered[dataset][group] = sorted(
                aggregate_seeds(groups[group]), key=lambda row: (-(row["ndcg@10"] or 0.0), row["method"],
                                                                 row["record"]))
            annotate_significance(ordered[dataset][group])
    return ordered


def aggregate_seeds(rows: list[Row]) -> list[Row]:
    """Runs that differ only by seed become one row: metrics averaged, `seed_sd` the standard deviation
    over seeds, the seed column naming how many seeds stand behind it. Where every seed scored the same
    requests, the row's per-request values are their mean over seeds, so it gets an interval and a test."""
    by_config: dict[str, list[Row]] = {}
    for row in rows:
        by_config.setdefault(row["_same_but_seed"], []).append(row)
    out = []
    for runs in by_config.values():
        if len(runs) == 1 or len({row["seed"] for row in runs}) < len(runs):
            out.extend(runs)
            continue
        runs = sorted(runs, key=lambda row: row["seed"])
        paired = all(row["_values"] is not None and np.array_equal(row["_requests"], runs[0]["_requests"])
                     for row in runs)
        merged = {**runs[0], "_requests": runs[0]["_requests"] if paired else None,
                  "_values": np.mean([row["_values"] for row in runs], axis=0) if paired else None,
                  "seed": f"{len(runs)} seeds ({', '.join(str(row['seed']) for row in runs)})",
                  "record": "; ".join(row["record"] for row in runs), "seed_sd": {}}
        for metric in METRIC_COLUMNS:
            values = [row[metric] for row in runs if row[metric] is not None]
            if len(values) == len(runs):
                merged[metric] = float(np.mean(values))
                merged["seed_sd"][metric] = float(np.std(values, ddof=1))
        for key in ("train_s", "samples_per_sec"):
            numbers = [row[key] for row in runs if row[key] is not None]
            merged[key] = float(np.mean(numbers)) if numbers else None
        out.append(merged)
    return out


def annotate_significance(rows: list[Row]) -> None:
    """Each row with per-request values gets `ci` {metric: (low, high)}; every other row of a column is
    tested against the column's best when both have values for the same requests (`p_vs_best` {metric:
    Holm-adjusted p}), else marked `untested` {metric}, so an untestable row is never read as a loser."""
    with_values = [row for row in rows if row["_values"] is not None]
    for row in with_values:
        low, high = bootstrap_ci(row["_values"])
        # An interval without its value would read as a number ("– ±0.09"): none where the value is undefined.
        row["ci"] = {m: (float(low[j]), float(high[j])) for j, m in enumerate(METRIC_COLUMNS) if row[m] is not None}
    tests: list[tuple[str, Row, np.ndarray]] = []  # (metric, row, row - best per request)
    for j, metric in enumerate(METRIC_COLUMNS):
        present = [row for row in rows if row[metric] is not None]
        if len(present) < 2:
            continue
        best = max(present, key=lambda row: row[metric])
        for row in present:
            if row is best:
                continue
            if (best["_values"] is None or row["_values"] is None
                    or not np.array_equal(row["_requests"], best["_requests"])):
                row.setdefault("untested", set()).add(metric)
            else:
                tests.append((metric, row, row["_values"][:, j] - best["_values"][:, j]))
    # One call per request count: the Monte-Carlo columns of a table share one seeded stream of sign flips.
    p = np.empty(len(tests))
    by_length: dict[int, list[int]] = {}
    for i, (_, _, difference) in enumerate(tests):
        by_length.setdefault(len(difference), []).append(i)
    for indices in by_length.values():
        p[indices] = sign_flip_p_values(np.stack([tests[i][2] for i in indices], axis=1))
    for metric in METRIC_COLUMNS:  # Holm within the table, per column
        tested = [(row, float(p[i])) for i, (m, row, _) in enumerate(tests) if m == metric]
        for (row, _), adjusted in zip(tested, holm([q for _, q in tested])):
            row.setdefault("p_vs_best", {})[metric] = adjusted


def load_reference(reference_dir: Path) -> list[Row]:
    """Published numbers from reference/*.csv, checked so a typo fails loudly with its line."""
    rows: list[Row] = []
    for path in sorted(reference_dir.glob("*.csv")) if reference_dir.exists() else []:
        reader = csv.DictReader(io.StringIO(read_text(path)))
        missing = [column for column in REFERENCE_COLUMNS if column not in (reader.fieldnames or [])]
        if missing:
            raise BenchError(f"{path}: missing columns {missing}")
        for line, raw in enumerate(reader, start=2):
            row: Row = {key: (value or "").strip() for key, value in raw.items()}
            for metric in METRIC_COLUMNS:
                text = row.get(metric, "")
                try:
                    row[metric] = float(text) if text else None
                except ValueError as error:
                    raise BenchError(f"{path}:{line}: {metric} is not a number: {text!r}") from error
                if row[metric] is not None and not 0.0 <= row[metric] <= 1.0:
                    raise BenchError(f"{path}:{line}: {metric} = {text} is outside [0, 1]")
            if not row["dataset"] or not row["method"] or not row["source"]:
                raise BenchError(f"{path}:{line}: dataset, method and source are required")
            row["file"] = path.name
            rows.append(row)
    return rows


def load_speed(results_dir: Path) -> list[Record]:
    """Speed records written by `bench speed` (results/speed/*.json), sorted by file name."""
    return [record for _, record in read_json_files(results_dir / "speed")]


def defined(value: Any) -> float | None:
    """A metric value, or None where it is undefined (missing or NaN), so every column treats both alike."""
    return None if value is None or math.isnan(float(value)) else float(value)


def fmt_metric(value: Any) -> str:
    return "–" if defined(value) is None else f"{float(value):.4f}"


def fmt_number(value: Any) -> str:
    """Speeds and seconds: 3 significant figures, thousands separated."""
    if value is None:
        return "–"
    value = float(value)
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _table(header: list[str], lines: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(cells) + " |" for cells in lines]
    return out


def render_group(rows: list[Row]) -> list[str]:
    metrics = [m for m in METRIC_COLUMNS if any(row[m] is not None for row in rows)]
    # A lone row is not "best" of anything: bold only when there is a comparison.
    best = {m: max(row[m] for row in rows if row[m] is not None) for m in metrics} if len(rows) > 1 else {}
    header = ["method", "backbone", "ratio", *(METRIC_TITLES[m] for m in metrics), "position", "data",
              "training", "seed", "train s", "samples/s", "device", "date"]
    lines = []
    marked = False
    for row in rows:
        cells = [row["method"], row["backbone"] or "–", "–" if row["ratio"] is None else str(row["ratio"])]
        for metric in metrics:
            text = fmt_metric(row[metric])
            interval = (row.get("ci") or {}).get(metric)
            if interval is not None:
                text += f" ±{(interval[1] - interval[0]) / 2:.4f}"
            spread = (row.get("seed_sd") or {}).get(metric)
            if spread is not None:
                text += f" sd {spread:.4f}"
            # Zero is nobody's win: a column where the best is 0 has no bold.
            is_best = row[metric] is not None and row[metric] == best.get(metric) and row[metric] > 0
            p = (row.get("p_vs_best") or {}).get(metric)
            tied = bool(best) and p is not None and not math.isnan(p) and p >= ALPHA and best.get(metric, 0) > 0
            if not (is_best or tied) and best.get(metric, 0) > 0 and metric in row.get("untested", ()):
                text, marked = f"{text} {UNTESTED_MARK}", True
            cells.append(f"**{text}**" if is_best or tied else text)
        cells += [row["position"], row["data"], row["training"], str(row["seed"]), fmt_number(row["train_s"]),
                  fmt_number(row["samples_per_sec"]), str(row["device"]), row["date"]]
        lines.append(cells)
    return _table(header, lines) + (["", UNTESTED_NOTE] if marked else [])


def render_published(rows: list[Row]) -> list[str]:
    metrics = [m for m in METRIC_COLUMNS if any(row[m] is not None for row in rows)]
    header = ["method", "ratio", *(METRIC_TITLES[m] for m in metrics), "position", "source"]
    lines = [[row["method"], row["compression_ratio"] or "–", *(fmt_metric(row[m]) for m in metrics),
              POSITION_TEXT.get(row["eval_target"], row["eval_target"]), f"{row['source']} ({row['file']})"]
             for row in rows]
    return _table(header, lines)


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
             "hardware; warm-up excluded; median (min–max) over repetitions.", ""]
    for record in speed:
        hardware = record.get("hardware", {}).get("name") or record.get("device")
        kinds = " / ".join(sorted({weights_text(e, record) for e in record["methods"].values()}))
        lines += [f"### {record['dataset']} · {record['device']} ({hardware}) · batch {record.get('batch_size')} · "
                  f"{kinds} weights", "",
                  f"{record.get('num_prompts')} requests × {record.get('repeats')} repetitions, batch size "
                  f"{record.get('batch_size')}, {record.get('hardware', {}).get('torch_threads', '?')} torch "
                  f"thread(s), backbone {record.get('backbone') or '–'}; "
                  f"{record.get('weights', '')}", ""]
        header = ["method", "weights", "samples/s (median)", "min–max", "peak memory MB", "process before load MB",
                  "generated tokens/sample (cap)", "machine load (1 min)"]
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
            rows.append([f"{name}[{setting}]" if setting else name, weights, fmt_number(speed_["median"]),
                         f"{fmt_number(speed_['min'])}–{fmt_number(speed_['max'])}",
                         fmt_number(entry.get("peak_memory_mb")), fmt_number(entry.get("process_baseline_mb")),
                         decoding_text(entry),
                         f"{fmt_number(load.get('before'))}→{fmt_number(load.get('after'))}" if load else "–"])
        lines += _table(header, rows)
        ratio = record.get("ratio_cove_over_bigrec")
        if ratio is not None and capped:
            # The generative method's time was set by its token cap, not by its weights: the ratio moves
            # with the cap, so it is no headline.
            lines += ["", f"CoVE / BIGRec samples/s: {ratio:.1f}× (medians; not a headline: "
                          f"{', '.join(capped)} hit the max_new_tokens cap on most requests, so the ratio "
                          "moves with the cap)."]
        elif ratio is not None:
            lines += ["", f"CoVE / BIGRec samples/s: **{ratio:.1f}×** (medians)."]
        over_tiger = record.get("ratio_cove_over_tiger")
        if over_tiger is not None:
            # TIGER's decoding length is its ID length on every beam: fixed by design, never by a cap.
            params = {m: (record["methods"][m].get("method_info") or {}).get(key) for m, key in
                      (("cove", "backbone_params"), ("tiger", "parameters"))}
            sizes = (f"; parameters: CoVE {params['cove']:,}, TIGER {params['tiger']:,}"
                     if all(params.values()) else "")
            tiger_setting = (record["methods"]["tiger"].get("method_info") or {}).get("setting")
            tiger = f"TIGER[{tiger_setting}]" if tiger_setting else "TIGER"
            lines += ["", f"CoVE / {tiger} samples/s: **{over_tiger:.2g}×** (medians; {tiger} "
                      f"decodes {decoding_text(record['methods']['tiger'])} ID tokens per beam{sizes})."]
        lines.append("")
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


def render_compact(records: list[Record]) -> list[str]:
    """A short plain table of some runs (the demo's): one line each, under 100 characters; the label column
    is wide enough for a setting with one override (bigrec[default,epochs=1])."""
    lines = [f"{'method':<30} {'data':<28} {'NDCG@10':>8} {'HR@10':>7} {'train s':>9} {'samples/s':>10}"]
    for record in records:
        sub = record.get("subsample") or {}
        data = (f"{sub['eval_requests']:,}/{sub['eval_requests_total']:,} req" if sub.get("eval_requests")
                else "full")
        if (sub.get("train") or {}).get("users"):
            data += f", {sub['train']['users']:,} users"
        metrics = record["metrics"]
        lines.append(f"{method_label(record)[:30]:<30} {data[:28]:<28} {metrics.get('ndcg@10', 0):>8.4f} "
                     f"{metrics.get('hr@10', 0):>7.4f} {fmt_number(record.get('train_seconds')):>9} "
                     f"{fmt_number(record.get('samples_per_sec')):>10}")
    return lines


def render_markdown(
    tables: dict[str, dict[Group, list[Row]]],
    published: list[Row] | None = None,
    speed: list[Record] | None = None,
    title: str = "# Leaderboard",
) -> str:
    published = published or []
    lines = [title, "", PROTOCOL_LINE, ""]
    datasets = sorted(set(tables) | {row["dataset"] for row in published})
    for dataset in datasets:
        lines += [f"## {dataset}", ""]
        groups = tables.get(dataset, {})
        if not groups:
            lines += ["No recorded runs yet.", ""]
        for group, rows in groups.items():
            lines += [f"### {dataset} · {group.title()}", "", *render_group(rows), ""]
        mine = [row for row in published if row["dataset"] == dataset]
        if mine:
            mixed = len({row["eval_target"] for row in mine}) > 1
            lines += [f"### {dataset} · published numbers (not run here)", "",
                      "Reported by the papers' authors on their own splits and code; see "
                      "[reference/SOURCE.md](reference/SOURCE.md). Not ranked against our runs."
                      + (" The evaluated position differs between these rows." if mixed else ""), "",
                      *render_published(mine), ""]
    if speed:
        lines += render_speed(speed)
    return "\n".join(lines).rstrip("\n") + "\n"


def render_csv(tables: dict[str, dict[Group, list[Row]]]) -> str:
    buffer = io.StringIO()
    intervals = [f"{m}_{part}" for m in METRIC_COLUMNS for part in ("ci_low", "ci_high", "p_vs_best", "seed_sd")]
    columns = ["dataset", "method", "backbone", "ratio", *METRIC_COLUMNS, "position", "mask_history",
               "eval_requests", "data", "training", "seed", "train_s", "samples_per_sec", "device", "date", "record",
               *intervals]
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for dataset, groups in tables.items():
        for group, rows in groups.items():
            for row in rows:
                extra: dict[str, Any] = {}
                for metric, (low, high) in (row.get("ci") or {}).items():
                    extra[f"{metric}_ci_low"], extra[f"{metric}_ci_high"] = round(low, 6), round(high, 6)
                for metric, spread in (row.get("seed_sd") or {}).items():
                    extra[f"{metric}_seed_sd"] = round(spread, 6)
                for metric, p in (row.get("p_vs_best") or {}).items():
                    extra[f"{metric}_p_vs_best"] = None if math.isnan(p) else round(p, 6)
                plain = {key: value for key, value in row.items() if key in columns}
                writer.writerow({"dataset": dataset, "mask_history": group.mask_history,
                                 "eval_requests": group.requests, **plain, **extra})
    return buffer.getvalue()


def render_readme(leaderboard_md: str, plots: list[Path], results_dir: Path) -> str:
    """results/README.md: the current standing with plots, linked relatively."""
    body = leaderboard_md.split("\n", 1)[1]
    lines = ["# recbench results", "",
             "Generated by `bench leaderboard` from the run records in `runs/`, the speed records in "
             "`speed/`, the catalogue-scale records in `scale/` and the published numbers in `reference/`; do not "
             "edit by hand.",
             body.rstrip("\n"), ""]
    lines += render_scale(load_scale(results_dir), results_dir)
    if plots:
        lines += ["## Plots", ""]
        for path in plots:
            relative = path.relative_to(results_dir).as_posix()
            lines += [f"![{path.stem}]({relative})", ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def write_leaderboard(results_dir: Path, strict: bool = False) -> WrittenLeaderboard:
    """Write leaderboard.md/.csv, plots/*.png and README.md under results_dir (corrupt records are
    skipped with a warning, or refused when strict)."""
    from bench.plots import write_plots

    records = iter_records(results_dir, strict=strict)
    tables = leaderboard_rows(records)
    published = load_reference(results_dir / "reference")
    speed = load_speed(results_dir)
    markdown = render_markdown(tables, published, speed)
    md_path, csv_path = results_dir / "leaderboard.md", results_dir / "leaderboard.csv"
    atomic_write_text(md_path, markdown)
    atomic_write_text(csv_path, render_csv(tables))
    plots = write_plots(records, speed, results_dir / "plots")
    readme = results_dir / "README.md"
    atomic_write_text(readme, render_readme(markdown, plots, results_dir))
    return WrittenLeaderboard(markdown, [md_path, csv_path, *plots, readme])
