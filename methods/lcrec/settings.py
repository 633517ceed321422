"""The [lcrec] section of bench.toml, checked once so mistakes fail before a model loads."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from bench.errors import BenchError
from bench.settings import module_names, non_empty_strings, parse_section, positive_ints
from bench.train.precision import PRECISIONS, TRAIN_ATTENTIONS
from methods.semantic_ids.catalogue import RQVAESettings


@dataclass(frozen=True)
class LCRecSettings:
    model: str = "smollm2"
    # Semantic IDs: the same keys and defaults as [tiger], so both methods share one catalogue's cached IDs.
    text_fields: list[str] = field(default_factory=lambda: ["title"])
    levels: int = 3
    codebook_size: int = 256
    latent_dim: int = 32
    rqvae_hidden: list[int] = field(default_factory=lambda: [512, 256, 128])
    beta: float = 0.25
    rqvae_epochs: int = 200
    rqvae_lr: float = 1e-3
    rqvae_batch_size: int = 1024
    semantic_ids: str = "rqvae"       # "rqvae" or "rqkmeans", as [tiger]
    # LoRA and the new code tokens' embeddings are trained; the backbone is frozen.
    lora_rank: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    lora_targets: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    learning_rate: float = 1e-3
    warmup_steps: int = 20
    batch_size: int = 16
    grad_accum: int = 2
    # Micro-batches of sequences of similar length, each weighing its labelled tokens (bench.train.batching).
    length_buckets: bool = True
    epochs: int = 2
    patience: int = 0
    max_history: int = 50
    max_train_users: int = 0
    beam_size: int = 20
    eval_batch_size: int = 32
    precision: str = "auto"
    train_attention: str = "auto"  # bench.train.precision.training_attention
    max_train_minutes: float = 0.0
    max_eval_users: int = 0           # handled by the harness
    preset: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {key: value for key, value in asdict(self).items() if key != "preset"}

    @property
    def rqvae(self) -> RQVAESettings:
        return RQVAESettings(tuple(self.text_fields), list(self.rqvae_hidden), self.latent_dim, self.levels,
                             self.codebook_size, self.beta, self.rqvae_epochs, self.rqvae_lr, self.rqvae_batch_size,
                             self.semantic_ids)


MAX_LEVELS = 7  # methods.lcrec.codes.LEVEL_LETTERS has 8: the levels and the collision digit
CHOICES = {"precision": PRECISIONS, "train_attention": TRAIN_ATTENTIONS, "semantic_ids": ("rqvae", "rqkmeans")}
POSITIVE = ("levels", "codebook_size", "latent_dim", "rqvae_epochs", "rqvae_batch_size", "lora_rank", "batch_size",
            "grad_accum", "max_history", "beam_size", "eval_batch_size")
HOOKS = {"text_fields": non_empty_strings('item text fields such as ["title", "brand"]'),
         "rqvae_hidden": positive_ints("layer widths"), "lora_targets": module_names}


def parse_settings(section: dict[str, Any]) -> LCRecSettings:
    """Defaults < the section's values; a wrong key, type or choice is one BenchError naming it."""
    settings = parse_section(LCRecSettings, section, "lcrec", choices=CHOICES, positive=POSITIVE, hooks=HOOKS)
    if settings.levels > MAX_LEVELS:
        raise BenchError(f"bench.toml [lcrec].levels: expected at most {MAX_LEVELS} (one token letter per level and "
                         f"one for the collision digit), got {settings.levels}")
    return settings
