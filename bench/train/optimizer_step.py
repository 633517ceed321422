"""One optimizer step, applied only when every gradient is finite.

Why: a NaN or inf gradient (CoVE's first CUDA run: SDPA's backward on padding rows) makes every weight NaN
in one step, while that step's loss is still finite; the loss shows it only a step later, after a commit
may already have saved the broken weights. Checking the gradients' norm before the step keeps the weights
(and any checkpoint) as they were, and the training loop stops at that step (bench.train.lifecycle).
"""

from __future__ import annotations

from typing import Any

import torch


def step_if_finite(optimizer: torch.optim.Optimizer, params: list[torch.Tensor],
                   max_grad_norm: float | None = None) -> bool:
    """Clip the gradients to `max_grad_norm` (None: no clipping) and take the optimizer step, unless their
    norm is not finite; returns whether the step was taken. Under torchrun the gradients are the ranks'
    averaged ones (an FSDP norm is the full one), so every rank decides alike."""
    if max_grad_norm is not None:
        norm: Any = torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    else:
        norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
    if hasattr(norm, "full_tensor"):  # an FSDP2 (DTensor) norm
        norm = norm.full_tensor()
    if not bool(torch.isfinite(norm)):
        return False
    optimizer.step()
    return True
