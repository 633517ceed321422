"""What a row is called: the method label with its setting and overrides, what decides its numbers
besides the seed, its swept setting, and the data and training columns. Every table and plot names runs
through this module, so one run carries one name everywhere."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from bench.config import config_path, load_config, method_config
from bench.registry import configured_registry
from bench.store.results import training_summary

Record = dict[str, Any]

# Keys that never change the numbers of a row (prompts per forward pass; how many requests are scored, which
# the table and data column already say): no difference in labels, nor between runs "identical in effect".
NO_EFFECT_KEYS = {"eval": frozenset({"batch_size", "max_eval_users", "extra_targets"}),
                  "method": frozenset({"eval_batch_size", "max_eval_users"})}
# Keys another column shows (backbone, data; and each method's swept setting): left out of the label.
SHOWN_ELSEWHERE = frozenset({"model", "max_train_users"})
# Short forms for labels; any other key is shown as it is spelled in bench.toml.
KEY_SHORT = {"compression_ratio": "ratio", "learning_rate": "lr", "batch_size": "bs", "train_batch_size": "bs",
             "grad_accum": "accum",
             "weight_decay": "wd", "train_samples": "samples", "use_titles": "titles", "max_history": "history",
             "max_title_words": "title_words", "max_seq_length": "seq_len", "max_new_tokens": "new_tokens",
             "hidden_size": "hidden", "embedding_size": "emb", "num_hashes": "k", "max_train_minutes": "minutes",
             "stopping_step": "patience", "hidden_dropout_prob": "dropout", "attn_dropout_prob": "attn_dropout"}
# Flags a method puts in method_info.setting that restate one config value: where the record holds that key,
# the label shows it as an override of the preset (or not at all), so `cpu_titles` never meets `id-only`.
SETTING_FLAG_KEYS = {"id-only": "use_titles"}
LABEL_VALUE_CHARS = 12


def epochs_done(record: Record) -> tuple[str, bool]:
    """Epochs run as text, a fraction where the last epoch was cut short (a budget that stops epoch 2 after
    160 of 22,363 samples trained 1.01 epochs, not 2), and whether it was."""
    summary = training_summary(record)
    ran, trained = summary["epochs_run"], summary["epochs_trained"]
    if trained is not None and ran and trained < ran:
        return (f"{trained:.2f}" if trained >= 0.01 else f"{trained:.1g}"), True
    return str(ran), False


@functools.lru_cache(maxsize=4)
def _swept_settings(path: str) -> dict[str, str]:
    config = _bench_config(path) if Path(path).exists() else {}
    return dict(configured_registry(config).swept_settings)


def swept_setting(method: str) -> str | None:
    """The setting a method's plugin says its rows are compared over (CoVE: compression_ratio), or None."""
    return _swept_settings(str(config_path().resolve())).get(method)


def swept_value(record: Record) -> Any:
    """The record's value of its method's swept setting (None where the method declares none)."""
    key = swept_setting(record["method"])
    return None if key is None else (record.get("config", {}).get(record["method"]) or {}).get(key)


def swept_text(record: Record) -> str | None:
    """`ratio=16`: the swept setting's short name and value, for the tables' "swept" column."""
    key, value = swept_setting(record["method"]), swept_value(record)
    return None if value is None else f"{KEY_SHORT.get(key, key)}={_short_value(value)}"


def train_scope(record: Record) -> str:
    sub = record.get("subsample") or {}
    bits = []
    if sub.get("eval_requests") is not None and sub.get("eval_requests") != sub.get("eval_requests_total"):
        bits.append(f"eval {sub['eval_requests']}/{sub['eval_requests_total']}")
    if sub.get("train"):
        bits.append("train " + ",".join(f"{k}={v}" for k, v in sorted(sub["train"].items())))
    return "subsample (" + "; ".join(bits) + ")" if bits else "full"


def train_seconds(record: Record) -> float | None:
    """Every call's training time where the record has it (a resumed run's own is its last call's)."""
    total = record.get("train_seconds_total")
    return total if total is not None else record.get("train_seconds")


def reused_generations(record: Record) -> bool:
    """A generative method grounded texts it had generated in an earlier scoring (BIGRec's reuse_generations):
    its scoring seconds are not a decoding speed."""
    return bool((record.get("method_info") or {}).get("generations_reused"))


def scoring_speed(record: Record) -> float | None:
    """The record's samples/s, or None where its scoring grounded reused generations (not a decoding speed)."""
    return None if reused_generations(record) else record.get("samples_per_sec")


def training_text(record: Record) -> str:
    """Epochs run of the maximum and why training stopped, so an undertrained row is visible."""
    summary = training_summary(record)
    ran, most, stopped = summary["epochs_run"], summary["epochs_max"], summary["stopped_by"]
    if ran is None:
        return "–"
    done, partial = epochs_done(record)
    text = f"{done}/{most} epochs" if most is not None else f"{done} epochs"
    text = f"{text} (epoch {ran} partial)" if partial else text
    text = f"{text}, stopped by {stopped}" if stopped else text
    resumed = summary["resumed_after_epoch"]
    if record.get("weights_from"):  # bench evaluate loaded a finished run: its training is that run's
        text = f"{text}; run {record['weights_from']['config_hash']}'s training"
    elif resumed is not None:
        calls = record.get("training_calls")
        scope = ("train s counts this call only" if record.get("train_seconds_total") is None
                 else f"train s sums its {calls} calls" if calls else "train s sums all its calls")
        text = f"{text} (resumed after epoch {resumed}; {scope})"
    info = record.get("method_info") or {}
    if reused_generations(record):
        text = f"{text}; {info['generations_reused']:,} generated texts reused from an earlier scoring (no samples/s)"
    if info.get("examples_seen") and info.get("paper_train_samples"):  # how far from the paper's training
        text = f"{text}; {info['examples_seen'] / 1e6:.2f}M samples seen (paper: {info['paper_train_samples']})"
    return f"{text}; shared the machine with other runs (--parallel)" if record.get("exclusive") is False else text


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
    # A record made before a hash-neutral key existed ran at its neutral value: filled in, so a neutral value
    # that is no longer the default (bigrec.selection = ndcg) is named like any other difference.
    neutral = {key.split(".", 1)[1]: value for key, value in config.get("hash_neutral", {}).items()
               if key.startswith(f"{method}.")}
    section = {**neutral, **(record.get("config", {}).get(method) or {})}
    return {key: value for key, value in sorted(section.items())
            if key in base and key != "preset" and key not in NO_EFFECT_KEYS["method"] and key not in SHOWN_ELSEWHERE
            and key != swept_setting(method) and value != base[key]}


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
    if record.get("weights_from"):  # bench evaluate: another run's weights, its epoch chosen its own way
        parts.append(f"weights={record['weights_from']['config_hash']}")
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
    reused = (record.get("weights_from") or {}).get("config_hash")
    return json.dumps([method, effective, record.get("max_train_minutes"), record.get("device"),
                       record.get("model_identity"), *([reused] if reused else [])], sort_keys=True, default=str)
