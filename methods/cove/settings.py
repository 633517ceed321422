"""CoVE's settings: the [cove] section of bench.toml, typed and checked, and what a run's settings mean for
its record (the deviations from the authors' runs, the row label's setting name)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.errors import BenchError
from bench.settings import module_names, parse_section
from bench.train.precision import PRECISIONS, TRAIN_ATTENTIONS


@dataclass(frozen=True)
class CoVESettings:
    """The [cove] section of bench.toml (every key listed there; see its comments)."""

    model: str = "smollm2"
    compression_ratio: int = 1
    num_hashes: int = 4
    hash_seed: int = 0
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    lora_targets: tuple[str, ...] = ("q_proj", "v_proj")
    learning_rate: float = 1e-4
    weight_decay: float = 0.0
    warmup_ratio: float = 0.03
    scheduler: str = "cosine"
    batch_size: int = 8
    grad_accum: int = 4
    epochs: int = 3
    patience: int = 2
    train_samples: str = "last"
    loss: str = "item"
    max_history: int = 20
    max_title_words: int = 20
    max_prompt_tokens: int = 1024
    use_titles: bool = True
    freeze_item_embeddings: bool = False
    max_train_users: int = 0
    max_eval_users: int = 0  # handled by the harness
    eval_batch_size: int = 32
    max_train_minutes: float = 0.0
    precision: str = "fp32"
    train_attention: str = "auto"  # bench.train.precision.training_attention
    length_buckets: int = 0
    # Scoring: with length_buckets, a length-sorted forward closes once its padding would pass this fraction
    # of its tokens (0 = off: forwards of length_buckets prompts). Fewer padded tokens, the same scores up to
    # float rounding of other batch shapes.
    max_padding: float = 0.0
    # Scoring through torch.compile (inductor: fused norms and activations around oneDNN/cuBLAS matmuls); the
    # first forward compiles (~20-70 s on a 2-core CPU), a new prompt shape once more (then shape-generic).
    compile_scoring: bool = False
    fsdp: bool = False
    preset: str | None = None  # set by the harness when --preset is used


CHOICES = {"scheduler": ("cosine", "linear", "constant"), "train_samples": ("last", "all_prefixes"),
           "loss": ("item", "sequence", "all_tokens"), "precision": PRECISIONS, "train_attention": TRAIN_ATTENTIONS}


POSITIVE = ("compression_ratio", "num_hashes", "batch_size", "grad_accum", "eval_batch_size")


def parse_settings(config: dict[str, Any]) -> CoVESettings:
    """Typed settings from the config section; a wrong value names the key and what was expected."""
    settings = parse_section(CoVESettings, config, "cove", choices=CHOICES, positive=POSITIVE,
                             hooks={"lora_targets": lambda value: tuple(module_names(value))})
    if settings.num_hashes > 16:
        raise BenchError(f"bench.toml [cove].num_hashes: expected 1..16, got {settings.num_hashes}")
    return settings


# Keys that never change what a training learns, left out of the work dir's key: how a trained model scores,
# and fsdp (how training is spread, already in the work dir's name through the world size).
SCORING_ONLY_KEYS = ("max_eval_users", "eval_batch_size", "max_padding", "fsdp", "compile_scoring")
# The authors' scripts (../shared/PROTOCOLS.md): what a setting is compared against.
AUTHORS_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def deviations(s: CoVESettings) -> list[str]:
    """Every way this run differs from the authors' runs, for the record (not only for comments)."""
    out = [
        f"backbone: {s.model!r} (SmolLM2-135M-Instruct by default), not Llama-3.2-3B",
        "selection each epoch on held-out requests the run does not report (authors: no validation split; "
        "their checkpoint was picked on the reported split)",
        "item input table drawn from the base vocabulary's per-channel mean/std (authors: xavier-uniform for "
        "hashed tables, nn.Embedding's N(0, 1) at ratio 1)",
        "item output head xavier-uniform (authors: nn.Linear's default init, U(-1/sqrt(d), 1/sqrt(d)))",
        "item tokens added with lstrip=True, so the space before an item token is absorbed into it (authors: "
        "plain special tokens, the space stays a token of its own)",
        f"prompts over {s.max_prompt_tokens} tokens drop their oldest items, at training and evaluation alike "
        "(authors: training text right-truncated at 1024 tokens, evaluation never truncated)",
        "evaluation prompt is the exact prefix of the training text (the authors' evaluation prompt has an extra "
        "space after the colon of every history item but the first)",
        "item logits computed in fp32 on every device (authors: bf16)",
    ]
    if s.compression_ratio > 1:
        out.append("|S| = ceil(N / ratio) rows (authors: N // ratio; hash codes equal theirs only when the ratio "
                   "divides N)")
    if s.loss == "item":
        out.append("loss: cross-entropy of the target item token over the N items only (authors: causal-LM loss "
                   "on every token of the text over vocabulary + items)")
    if s.loss == "sequence":
        out.append("loss: item cross-entropy at every item position of the user's training sequence in one pass "
                   "(authors: one sample per user, causal-LM loss on every token over vocabulary + items)")
    if s.train_samples != "last" and s.loss != "sequence":
        out.append("trained on every prefix of each training sequence (authors: one sample per user)")
    if s.max_history:
        out.append(f"history cut to the most recent {s.max_history} items (authors: full history)")
    if s.max_title_words and s.use_titles:
        out.append(f"titles cut to their first {s.max_title_words} words (authors: whole titles)")
    if not s.use_titles:
        out.append("ID-only prompts, no titles (the authors' main setting lists titles)")
    if tuple(s.lora_targets) != AUTHORS_LORA_TARGETS:
        out.append(f"LoRA on {', '.join(s.lora_targets) or 'nothing'} (authors: {', '.join(AUTHORS_LORA_TARGETS)})")
    ours = {"LoRA rank": s.lora_rank, "LoRA alpha": s.lora_alpha, "LoRA dropout": s.lora_dropout,
            "learning rate": s.learning_rate, "weight decay": s.weight_decay, "warm-up ratio": s.warmup_ratio,
            "schedule": s.scheduler, "batch": s.batch_size * s.grad_accum, "epochs": s.epochs}
    theirs = {"LoRA rank": 8, "LoRA alpha": 16.0, "LoRA dropout": 0.0, "learning rate": 1e-4, "weight decay": 0.0,
              "warm-up ratio": 0.03, "schedule": "cosine", "batch": 32, "epochs": 14}
    out.extend(f"{key} {ours[key]} (authors: {theirs[key]})" for key in ours if ours[key] != theirs[key])
    if s.freeze_item_embeddings:
        out.append("item input table frozen (authors: trained)")
    return out


def setting_name(s: CoVESettings) -> str:
    """The row label's setting: the preset, else 'default', marked 'id-only' without titles, so two
    CoVE settings are never read as one method."""
    name = s.preset or "default"
    return name if s.use_titles else f"{name},id-only"
