"""The [bigrec] section of bench.toml, checked once so mistakes fail before a model loads."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from bench.settings import module_names, parse_section, word_or_number
from bench.train.precision import PRECISIONS, TRAIN_ATTENTIONS


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
    # Early stopping and the best epoch: "valid_loss" (the authors: loss on validation examples, here a seeded
    # subsample of `valid_loss_users`, 0 = all) or "ndcg" (validation NDCG@10 of the shared evaluator, which
    # decodes every validation request each epoch: far slower).
    selection: str = "valid_loss"
    # Micro-batches regrouped by length inside each optimizer step (the same examples per step, less padding;
    # the authors' micro-batches were random).
    length_sorted_steps: bool = False
    valid_loss_users: int = 512
    warmup_steps: int = 20
    loss: str = "response"
    train_samples: str = "last"
    max_train_users: int = 0
    max_eval_users: int = 0
    eval_batch_size: int = 8
    gamma: float | str = 0.0
    side_score: str = "popularity"
    # Ground the texts an earlier scoring of the same weights generated (methods/bigrec/generation_store.py)
    # instead of decoding again: for variants of the grounding under bench evaluate. Samples/s is then not a
    # decoding speed, and the record says how many were reused.
    reuse_generations: bool = False
    max_train_minutes: float = 0.0
    # "eos": stop at EOS or max_new_tokens (the method as published). For speed measurements only:
    # "mean_title" = exactly the catalogue's mean response length in tokens, or a fixed count.
    decode_length: str | int = "eos"
    # "fp32"; "bf16" (CPU: frozen weights stored in bf16, autocast; LoRA fp32) or "auto" (bf16 where
    # the CPU runs it natively). CUDA always runs bf16, as the authors did.
    precision: str = "fp32"
    train_attention: str = "auto"  # bench.train.precision.training_attention
    preset: str | None = None  # set by the harness when --preset is used

    def as_dict(self) -> dict[str, Any]:
        """The settings that shape training (the preset's name is only a label: its values are here)."""
        return {key: value for key, value in asdict(self).items() if key != "preset"}


CHOICES = {"embedder": ("base_llm", "minilm"), "loss": ("response", "all_tokens"),
           "train_samples": ("last", "all_prefixes"), "selection": ("valid_loss", "ndcg"),
           "side_score": ("popularity",), "precision": PRECISIONS, "train_attention": TRAIN_ATTENTIONS}
POSITIVE = ("num_beams", "max_new_tokens", "lora_rank", "batch_size", "grad_accum", "eval_batch_size")
HOOKS = {"gamma": word_or_number(("auto",)), "decode_length": word_or_number(("eos", "mean_title"), integer=True,
                                                                            minimum=1),
         "lora_targets": module_names}


def parse_settings(section: dict[str, Any]) -> BIGRecSettings:
    """Defaults < the section's values; unknown keys, wrong types and bad choices raise BenchError."""
    return parse_section(BIGRecSettings, section, "bigrec", choices=CHOICES, positive=POSITIVE, hooks=HOOKS)
