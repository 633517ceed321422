"""Numeric precision of LLM methods: bf16 where the hardware runs it natively, fp32 otherwise.

Shared by every method that runs a backbone (CoVE, BIGRec, LC-Rec), so "auto" means the same thing for all
of them and a record's `precision` is comparable across methods; so is the attention kernel they train with.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

PRECISIONS = ("fp32", "bf16", "auto")


def cpu_supports_bf16() -> bool:
    """bf16 matmuls are fast only with avx512_bf16 or AMX; elsewhere they are emulated and slow."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(wanted: str, device: str, log: Callable[[str], Any], method: str) -> str:
    """The precision a run uses: CUDA always bf16 autocast; on the CPU bf16 only where it is native
    ("auto" picks it there), falling back to fp32 with a one-line notice."""
    if device.startswith("cuda"):
        return "bf16"
    if wanted == "fp32":
        return "fp32"
    if cpu_supports_bf16():
        return "bf16"
    log(f"{method}: precision {wanted!r} asked, but this CPU has no native bf16 (avx512_bf16/amx); using fp32")
    return "fp32"


TRAIN_ATTENTIONS = ("auto", "sdpa", "eager")


def training_attention(wanted: str, device: str, precision: str, *, left_padded: bool = False) -> str | None:
    """The backbone's attention kernel while training (Hugging Face's names), None = as loaded. "auto" takes
    the eager matmuls on a CPU in bf16: PyTorch's CPU flash-attention backward is slow for short sequences
    (benchmarks/cove_train_speed.py: a bf16 SmolLM2 step on 16 x 48 tokens 20 % faster eager, fp32 the same).
    It also takes them on CUDA for left-padded batches (CoVE's): a padding position there is a query with no
    key to attend to, and SDPA's CUDA backward turns such rows into NaN gradients (H200, torch 2.11,
    transformers 5.24: SmolLM2's LoRA weights NaN after the first optimizer step; eager trained). A likely
    cause is pytorch/pytorch#196678: on H100/H200 since torch 2.11 the default cuDNN SDPA backward, given an
    explicit mask, returns NaN grad_q for rows whose log-sum-exp is below -ln(FLT_MAX) (~ -88.7), as a fully
    masked padding row's is (the issue names sequence lengths of 64 mod 128 too). Elsewhere the model keeps its
    own kernel (SDPA, or flash attention on CUDA); a step with non-finite gradients stops any training loop."""
    if wanted == "auto":
        if device == "cpu" and precision == "bf16":
            return "eager"
        return "eager" if device.startswith("cuda") and left_padded else None
    return wanted


@contextlib.contextmanager
def attention_kernel(model: Any, kernel: str | None) -> Iterator[str]:
    """Run a Hugging Face model (or a peft wrapper of one) with attention `kernel` (None: as loaded), the
    loaded one restored after; yields the kernel in use, for the record."""
    config = model.config
    loaded = config._attn_implementation
    config._attn_implementation = kernel or loaded
    try:
        yield config._attn_implementation
    finally:
        config._attn_implementation = loaded


def autocast(device: str, precision: str = "fp32") -> Any:
    """bf16 autocast on CUDA (as the authors trained), and on the CPU when precision is bf16; else fp32."""
    import torch

    if device.startswith("cuda"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")


def store_frozen_in_bf16(model: Any) -> int:
    """Frozen weights cast to bf16 once (under CPU autocast fp32 weights would be re-cast on every
    call); trainable weights (LoRA, item tables) stay fp32 for the optimizer. Returns how many."""
    import torch

    frozen = [p for p in model.parameters() if not p.requires_grad]
    for param in frozen:
        param.data = param.data.to(torch.bfloat16)
    return len(frozen)
