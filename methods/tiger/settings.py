"""The [tiger] section of bench.toml, checked before any data is read."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from bench.errors import BenchError, shown
from bench.settings import parse_section

CHOICES = {"encoder": ("minilm",), "precision": ("fp32", "bf16", "auto")}
POSITIVE = ("levels", "codebook_size", "latent_dim", "rqvae_batch_size", "max_history", "d_model", "num_layers",
            "num_heads", "d_kv", "d_ff", "batch_size", "beam_size", "eval_batch_size", "validate_every")
PAPER_T5 = (4, 128, 6, 64, 1024)  # layers per stack, d_model, heads, d_kv, d_ff (Rajput et al. 2023, Sec. 4)


@dataclass(frozen=True)
class TigerSettings:
    # Semantic IDs: a residual-quantised VAE over the items' text embeddings.
    encoder: str = "minilm"           # all-MiniLM-L6-v2 (384-d; the paper: Sentence-T5-XXL, 768-d)
    text_fields: list[str] | None = None  # item text encoded; None = ["title"] (the card's text_fields add more)
    levels: int = 3
    codebook_size: int = 256
    latent_dim: int = 32
    rqvae_hidden: list[int] | None = None  # encoder MLP widths; None = [512, 256, 128]
    beta: float = 0.25                # commitment weight
    rqvae_epochs: int = 200
    rqvae_lr: float = 0.001
    rqvae_batch_size: int = 1024
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
        return tuple(self.text_fields) if self.text_fields else ("title",)

    @property
    def t5_shape(self) -> tuple[int, int, int, int, int]:
        return (self.num_layers, self.d_model, self.num_heads, self.d_kv, self.d_ff)

    @property
    def hidden_widths(self) -> list[int]:
        return list(self.rqvae_hidden) if self.rqvae_hidden else [512, 256, 128]


def parse_settings(section: dict[str, Any]) -> TigerSettings:
    """Defaults < the section's values; a wrong key, type or choice is one BenchError naming it."""
    widths, fields = section.get("rqvae_hidden"), section.get("text_fields")
    rest = {k: v for k, v in section.items() if k not in ("rqvae_hidden", "text_fields")}
    settings = parse_section(TigerSettings, rest, "tiger", choices=CHOICES, positive=POSITIVE)
    if fields is not None:
        if not (isinstance(fields, list) and fields and all(isinstance(f, str) and f for f in fields)):
            raise BenchError(f"bench.toml [tiger].text_fields: expected a list of item text fields such as "
                             f'["title", "brand", "categories"], got {shown(fields)}')
        settings = TigerSettings(**{**settings.as_dict(), "text_fields": list(fields)})
    if widths is not None:
        if not (isinstance(widths, list) and widths and all(isinstance(w, int) and not isinstance(w, bool) and w > 0
                                                            for w in widths)):
            raise BenchError("bench.toml [tiger].rqvae_hidden: expected a list of positive widths, got "
                             f"{shown(widths)}")
        settings = TigerSettings(**{**settings.as_dict(), "rqvae_hidden": list(widths)})
    if not 0 <= settings.dropout < 1:
        raise BenchError(f"bench.toml [tiger].dropout: expected a number in [0, 1), got {settings.dropout!r}")
    return settings
