"""Runs launched by torchrun / `accelerate launch` (PyTorch's own launchers; we add none of our own).

Every rank evaluates a disjoint block of the requests (no padding duplicates, unlike a
DistributedSampler), the blocks' ranks are gathered in request order, and every rank computes the
same metrics, so a score never depends on how many processes produced it. Only rank 0 writes
checkpoints and records. Single-process runs never touch torch.distributed.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any, NoReturn

import numpy as np


def world() -> tuple[int, int]:
    """(rank, world size) from the launcher's environment; (0, 1) when not launched by one."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def is_main() -> bool:
    return world()[0] == 0


def local_device(device: str) -> str:
    """cuda -> this rank's GPU (LOCAL_RANK); cpu stays cpu."""
    if device.startswith("cuda") and world()[1] > 1:
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return device


def init(device: str) -> str | None:
    """Join the process group when launched with several ranks; returns the backend (None: one process)."""
    if world()[1] == 1:
        return None
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if backend == "nccl":
            import torch

            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        # BENCH_PROCESS_GROUP_TIMEOUT (seconds): how long a collective may wait for a slow rank (torch's
        # default otherwise); tests shorten it to show that no rank waits in one while rank 0 waits for a lock.
        seconds = os.environ.get("BENCH_PROCESS_GROUP_TIMEOUT")
        if seconds:
            from datetime import timedelta

            dist.init_process_group(backend, timeout=timedelta(seconds=float(seconds)))
        else:
            dist.init_process_group(backend)
    return dist.get_backend()


def leave() -> None:
    """Destroy an nccl process group, as NCCL asks before a process exits. A gloo group is left alone: its
    backend has no shutdown to run, and destroying it only moves the teardown that can abort a rank (see
    end_process). No collective follows this."""
    if world()[1] > 1:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_backend() == "nccl":
            dist.destroy_process_group()


def end_process(code: int) -> NoReturn:
    """Exit with `code`. A torchrun rank ends without the interpreter's teardown (os._exit once its output
    is flushed): destroying gloo's C++ state can abort a rank with "terminate called without an active
    exception" (pytorch/pytorch#179291; CI at cf08bb3, twice in one run, although every rank had called
    destroy_process_group), and torchrun then kills the others, rank 0 while it writes the record. Only an
    nccl group is destroyed first (leave). Nothing is left to clean up by then: every file a run keeps is
    written atomically, and the command has released its locks."""
    if world()[1] == 1:
        sys.exit(code)
    try:
        leave()
    except BaseException as error:  # never exit 0 after a failure here
        print(f"error: leaving the nccl process group: {error!r}", file=sys.stderr)
        code = code or (130 if isinstance(error, KeyboardInterrupt) else 1)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:  # a closed pipe or a late Ctrl-C must not bring the teardown back
            pass
    os._exit(code)


def block(count: int) -> tuple[int, int]:
    """This rank's contiguous block of `count` items (sizes differ by at most one; none repeated)."""
    rank, size = world()
    bounds = np.linspace(0, count, size + 1).round().astype(int)
    return int(bounds[rank]), int(bounds[rank + 1])


def gather(value: Any) -> list[Any]:
    """Every rank's `value`, in rank order (one process: [value])."""
    if world()[1] == 1:
        return [value]
    import torch.distributed as dist

    out: list[Any] = [None] * world()[1]
    dist.all_gather_object(out, value)
    return out


def barrier() -> None:
    if world()[1] > 1:
        import torch.distributed as dist

        dist.barrier()


def collective_device(backend: str) -> Any:
    """Where a tensor must live for `backend`'s collectives: nccl takes CUDA tensors only (on this rank's
    GPU), gloo CPU tensors."""
    import torch

    if backend == "nccl":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def all_reduce_sum(tensor: Any) -> Any:
    """The one door of every all-reduce here: the tensor is summed over ranks in place, after checking it
    lives where the group's backend can read it (a CPU tensor handed to nccl fails only on a real
    multi-GPU run, at its first batch; this check makes the mistake visible on any machine)."""
    import torch.distributed as dist

    expected = collective_device(dist.get_backend())
    if tensor.device.type != expected.type:
        raise RuntimeError(f"collective on a {tensor.device.type} tensor, but the {dist.get_backend()} process "
                           f"group needs {expected.type} tensors")
    dist.all_reduce(tensor)
    return tensor


def sum_gradients(parameters: list[Any]) -> None:
    """Every rank's gradients summed into each rank's (one all-reduce over a flat buffer)."""
    if world()[1] == 1:
        return
    import torch

    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
    flat = all_reduce_sum(torch.cat([g.reshape(-1) for g in grads]))
    offset = 0
    for param, grad in zip(parameters, grads):
        size = grad.numel()
        param.grad = flat[offset:offset + size].view_as(grad).clone()
        offset += size


def my_slice(batch: list[Any]) -> list[Any]:
    """This rank's contiguous slice of a global batch (one process: all of it). Every rank sees the same
    global batches in the same order, so the slices together are exactly the one-process batch."""
    rank, size = world()
    return batch if size == 1 else batch[len(batch) * rank // size:len(batch) * (rank + 1) // size]


def share_weight(terms: float) -> float:
    """The factor on this rank's mean loss (over its `terms` loss terms) that makes the ranks' gradients,
    summed then divided by the world size (`average_gradients`), the global batch's mean-loss gradient:
    terms x ranks / (terms over all ranks). 0 when no rank has a term. Every rank must call it."""
    size = world()[1]
    if size == 1:
        return 1.0
    everyone = sum_over_ranks(terms)
    return terms * size / everyone if everyone else 0.0


def average_gradients(parameters: list[Any]) -> None:
    """Gradients summed over ranks and divided by the world size (the counterpart of share_weight)."""
    size = world()[1]
    if size == 1:
        return
    sum_gradients(parameters)
    for param in parameters:
        param.grad /= size


def sum_over_ranks(value: float) -> float:
    """The sum of `value` over ranks (one process: `value`)."""
    return value if world()[1] == 1 else sums_over_ranks([value])[0]


def sums_over_ranks(values: list[float]) -> list[float]:
    """Each value summed over ranks, all in one all-reduce (a training step's loss, counts and clock
    verdicts travel together instead of one collective each)."""
    if world()[1] == 1:
        return [float(value) for value in values]
    import torch
    import torch.distributed as dist

    tensor = torch.tensor([float(v) for v in values], dtype=torch.float64, device=collective_device(dist.get_backend()))
    return [float(v) for v in all_reduce_sum(tensor).tolist()]


def wait_together(try_acquire: Callable[[], bool], poll_seconds: float = 5.0) -> None:
    """Rank 0 polls `try_acquire` (a lock it may wait hours for) while the other ranks wait with it in
    short collectives, so none of them sits in one collective until the process group's timeout kills it.
    One process: polls alone."""
    while True:
        got = try_acquire() if is_main() else False
        if world()[1] > 1:
            got = sum_over_ranks(1.0 if got else 0.0) > 0
        if got:
            return
        time.sleep(poll_seconds)


def past_deadline_everywhere(past: bool) -> bool:
    """A time budget's verdict all ranks share (clocks differ: one rank stopping alone would leave the
    others waiting in the next gradient sum forever)."""
    return past if world()[1] == 1 else sum_over_ranks(1.0 if past else 0.0) > 0
