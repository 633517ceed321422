"""The [tiger] section of bench.toml, checked before any data is read."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from bench.settings import fraction_below_one, non_empty_strings, parse_section, positive_ints
from methods.semantic_ids.catalogue import RQVAESettings

CHOICES = {"encoder": ("minilm",), "precision": ("fp32", "bf16", "auto"), "semantic_ids": ("rqvae", "rqkmeans"),
           "schedule": ("inverse_sqrt", "constant")}
POSITIVE = ("levels", "codebook_size", "latent_dim", "rqvae_batch_size", "max_history", "d_model", "num_layers",
            "num_heads", "d_kv", "d_ff", "batch_size", "beam_size", "eval_batch_size", "validate_every")
PAPER_T5 = (4, 128, 6, 64, 1024)  # layers per stack, d_model, heads, d_kv, d_ff (Rajput et al. 2023, Sec. 4)


@dataclass(frozen=True)
class TigerSettings:
    # Semantic IDs: a residual-quantised VAE over the items' text embeddings.
    encoder: str = "minilm"           # all-MiniLM-L6-v2 (384-d; the paper: Sentence-T5-XXL, 768-d)
    text_fields: list[str] = field(default_factory=lambda: ["title"])  # item text encoded (card's text_fields)
    levels: int = 3
    codebook_size: int = 256
    latent_dim: int = 32
    rqvae_hidden: list[int] = field(default_factory=lambda: [512, 256, 128])  # encoder MLP widths
    beta: float = 0.25                # commitment weight
    rqvae_epochs: int = 200
    rqvae_lr: float = 0.001
    rqvae_batch_size: int = 1024
    semantic_ids: str = "rqvae"       # "rqvae" (the paper) or "rqkmeans" (residual k-means, no network; GRID)
    # The seq2seq model: the paper's T5 from config, randomly initialised.
    max_history: int = 20             # most recent items in the encoder input
    user_tokens: int = 0              # hashed user-ID buckets prepended to the input (0 = none; paper: 2000)
    d_model: int = 128
    num_layers: int = 4
    num_heads: int = 6
    d_kv: int = 64
    d_ff: int = 1024
    dropout: float = 0.1
    learning_rate: float = 0.001
    weight_decay: float = 0.0
    warmup_steps: int = 1000
    schedule: str = "inverse_sqrt"    # after warm-up: "inverse_sqrt" (the paper) or "constant" (GRID's reproduction)
    batch_size: int = 256
    epochs: int = 30
    patience: int = 3                 # validations without improvement before stopping
    validate_every: int = 1           # epochs between validations (the last epoch is always validated)
    max_train_minutes: float = 0.0
    # "auto": bf16 autocast for the T5 where it is native (CUDA, avx512_bf16/AMX CPUs), fp32 elsewhere;
    # beam scores are accumulated in fp32 either way.
    precision: str = "fp32"
    # Decoding: beam search constrained to the catalogue's IDs.
    beam_size: int = 20
    eval_batch_size: int = 64
    max_eval_users: int = 0           # handled by the harness
    preset: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def item_fields(self) -> tuple[str, ...]:
        return tuple(self.text_fields)

    @property
    def t5_shape(self) -> tuple[int, int, int, int, int]:
        return (self.num_layers, self.d_model, self.num_heads, self.d_kv, self.d_ff)

    @property
    def hidden_widths(self) -> list[int]:
        return list(self.rqvae_hidden)

    @property
    def rqvae(self) -> RQVAESettings:
        return RQVAESettings(self.item_fields, self.hidden_widths, self.latent_dim, self.levels, self.codebook_size,
                             self.beta, self.rqvae_epochs, self.rqvae_lr, self.rqvae_batch_size, self.semantic_ids)


HOOKS = {"text_fields": non_empty_strings('item text fields such as ["title", "brand", "categories"]'),
         "rqvae_hidden": positive_ints("layer widths"), "dropout": fraction_below_one}


def parse_settings(section: dict[str, Any]) -> TigerSettings:
    """Defaults < the section's values; a wrong key, type or choice is one BenchError naming it."""
    return parse_section(TigerSettings, section, "tiger", choices=CHOICES, positive=POSITIVE, hooks=HOOKS)
