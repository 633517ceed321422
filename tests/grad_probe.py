"""`bench` CLI that stops at the first optimizer step and saves the gradients it would apply.

Final weights after Adam cannot show a wrong gradient scale (Adam divides it out, clipping caps it), so
the distributed tests compare these first-step gradients between one process and several ranks instead.
The dump happens at the first `clip_grad_norm_` (before clipping) or, for loops that do not clip, at the
first optimizer step; every rank writes `rank<R>.pt` into $GRAD_PROBE_DIR, then exits 0 at once.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook


def _dump(parameters: list[torch.Tensor]) -> None:
    out = Path(os.environ["GRAD_PROBE_DIR"]) / f"rank{os.environ.get('RANK', '0')}.pt"
    torch.save([None if p.grad is None else p.grad.detach().float().cpu().clone() for p in parameters], out)
    sys.stdout.flush()
    os._exit(0)


def _install() -> None:
    clip = torch.nn.utils.clip_grad_norm_

    def clip_and_dump(parameters, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003 - torch's signature
        _dump(list(parameters))
        return clip(parameters, *args, **kwargs)

    torch.nn.utils.clip_grad_norm_ = clip_and_dump
    register_optimizer_step_pre_hook(
        lambda optimizer, args, kwargs: _dump([p for group in optimizer.param_groups for p in group["params"]]))


if __name__ == "__main__":
    _install()
    from bench.cli import main

    sys.argv[0] = "bench"
    main()
