"""The [sasrec_native] section of bench.toml, checked before any data is read."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from bench.errors import BenchError
from bench.settings import fraction_below_one, parse_section

SECTION = "bench.toml [sasrec_native]"
CHOICES = {"loss": ("ce", "bce")}
POSITIVE = ("max_seq_length", "hidden_size", "inner_size", "n_layers", "n_heads", "batch_size", "eval_batch_size")


@dataclass(frozen=True)
class NativeSASRecSettings:
    epochs: int = 200
    patience: int = 10           # epochs without a better validation NDCG@10 before stopping; 0 = never
    learning_rate: float = 0.001
    weight_decay: float = 0.0
    batch_size: int = 128        # users (whole sequences) per step
    eval_batch_size: int = 256
    max_seq_length: int = 50
    hidden_size: int = 64
    inner_size: int = 256
    n_layers: int = 2
    n_heads: int = 2
    dropout: float = 0.5
    loss: str = "ce"             # "ce" (softmax over all items) or "bce" (the paper's one negative per position)
    length_buckets: bool = True  # batches of users with similar sequence lengths
    max_train_minutes: float = 0.0
    preset: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_settings(section: dict[str, Any]) -> NativeSASRecSettings:
    """Defaults < the section's values; a wrong key, type or choice is one BenchError naming it."""
    settings = parse_section(NativeSASRecSettings, section, "sasrec_native", choices=CHOICES, positive=POSITIVE,
                             hooks={"dropout": fraction_below_one})
    if settings.hidden_size % settings.n_heads:
        raise BenchError(f"{SECTION}.n_heads: hidden_size {settings.hidden_size} must be divisible by "
                         f"n_heads {settings.n_heads}")
    return settings
