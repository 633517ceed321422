"""The [bigrec] section of bench.toml, checked once so mistakes fail before a model loads."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from bench.errors import BenchError, shown
from bench.train.precision import PRECISIONS

SECTION = "bench.toml [bigrec]"


@dataclass(frozen=True)
class BIGRecSettings:
    model: str = "smollm2"
    embedder: str = "base_llm"
    num_beams: int = 4
    max_new_tokens: int = 64
    max_history: int = 10
    max_title_words: int = 0
    lora_rank: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_targets: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    learning_rate: float = 1e-4
    batch_size: int = 4
    grad_accum: int = 32
    epochs: int = 50
    patience: int = 5
    warmup_steps: int = 20
    loss: str = "response"
    train_samples: str = "last"
    max_train_users: int = 0
    max_eval_users: int = 0
    eval_batch_size: int = 8
    gamma: float | str = 0.0
    side_score: str = "popularity"
    max_train_minutes: float = 0.0
    # "eos": stop at EOS or max_new_tokens (the method as published). For speed measurements only:
    # "mean_title" = exactly the catalogue's mean response length in tokens, or a fixed count.
    decode_length: str | int = "eos"
    # "fp32"; "bf16" (CPU: frozen weights stored in bf16, autocast; LoRA fp32) or "auto" (bf16 where
    # the CPU runs it natively). CUDA always runs bf16, as the authors did.
    precision: str = "fp32"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


CHOICES = {"embedder": ("base_llm", "minilm"), "loss": ("response", "all_tokens"),
           "train_samples": ("last", "all_prefixes"), "side_score": ("popularity",), "precision": PRECISIONS}
POSITIVE = ("num_beams", "max_new_tokens", "lora_rank", "batch_size", "grad_accum", "eval_batch_size")
NON_NEGATIVE = ("max_history", "max_title_words", "epochs", "patience", "warmup_steps", "max_train_users",
                "max_eval_users", "lora_alpha", "lora_dropout", "learning_rate", "max_train_minutes")


def parse_settings(section: dict[str, Any]) -> BIGRecSettings:
    """Defaults < the section's values; unknown keys, wrong types and bad choices raise BenchError."""
    known = BIGRecSettings.__dataclass_fields__
    values: dict[str, Any] = {}
    for key, value in section.items():
        if key == "preset":
            continue
        if key not in known:
            raise BenchError(f"{SECTION}: unknown key {key!r}. Known: {', '.join(sorted(known))}")
        values[key] = value
    defaults = BIGRecSettings()
    for key, value in values.items():
        default = getattr(defaults, key)
        if key == "gamma":
            if value != "auto" and (isinstance(value, bool) or not isinstance(value, int | float) or value < 0):
                raise BenchError(f"{SECTION}.gamma: expected \"auto\" or a number >= 0, got {shown(value)}")
            continue
        if key == "decode_length":
            if value not in ("eos", "mean_title") and (isinstance(value, bool) or not isinstance(value, int)
                                                       or value < 1):
                raise BenchError(f"{SECTION}.decode_length: expected \"eos\", \"mean_title\" or a number of "
                                 f"tokens >= 1, got {shown(value)}")
            continue
        if key == "lora_targets":
            if not (isinstance(value, list) and value and all(isinstance(v, str) for v in value)):
                raise BenchError(f"{SECTION}.lora_targets: expected a list of module names, got {shown(value)}")
            continue
        if isinstance(default, bool) or isinstance(value, bool):
            raise BenchError(f"{SECTION}.{key}: expected {type(default).__name__}, got {shown(value)}")
        if isinstance(default, float) and isinstance(value, int):
            values[key] = value = float(value)
        if not isinstance(value, type(default)):
            raise BenchError(f"{SECTION}.{key}: expected {type(default).__name__}, got {shown(value)}")
        if key in CHOICES and value not in CHOICES[key]:
            raise BenchError(f"{SECTION}.{key}: expected one of {list(CHOICES[key])}, got {shown(value)}")
        if key in POSITIVE and value < 1:
            raise BenchError(f"{SECTION}.{key}: expected a number >= 1, got {shown(value)}")
        if key in NON_NEGATIVE and value < 0:
            raise BenchError(f"{SECTION}.{key}: expected a number >= 0, got {shown(value)}")
    return BIGRecSettings(**values)
