"""FSDP for CoVE's training copy (`cove.fsdp = true` under torchrun): PyTorch's `fully_shard` (FSDP2)
shards every decoder layer, the item head and the rest of the model over the ranks, so a backbone whose
weights, gradients and optimizer state do not fit one device still trains. Only training is sharded:
validation and scoring use an ordinary full copy per rank, refreshed from the gathered trainable tensors
(LoRA and item tables are small), because sharded evaluation gives ranks different numbers of batches and
FSDP's gathers need every rank at every forward.

The ranks' gradients are averaged by FSDP's reduce-scatter, the counterpart of bench.train.distributed's
average_gradients, so the per-rank loss weighting of the data-parallel path stays as it is.
"""

from __future__ import annotations

from typing import Any

import torch


def shard_for_training(model: Any, device: str) -> Any:
    """fully_shard per decoder layer, the item head, then the root; the methods training calls outside
    `forward` (hidden_states, the item head's cross_entropy) gather their parameters like forward."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    from bench.train.distributed import world

    mesh = init_device_mesh("cuda" if device.startswith("cuda") else "cpu", (world()[1],))
    for layer in model.causal_lm.get_decoder().layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model.item_head, mesh=mesh)
    fully_shard(model, mesh=mesh)
    register_fsdp_forward_method(model, "hidden_states")
    register_fsdp_forward_method(model.item_head, "cross_entropy")
    return model


def is_sharded(model: Any) -> bool:
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in model.parameters())


def full_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Sharded tensors gathered whole (a collective: every rank calls it); others as they are."""
    from torch.distributed.tensor import DTensor

    return {name: t.full_tensor() if isinstance(t, DTensor) else t for name, t in state.items()}


def copy_into(target: torch.Tensor, source: torch.Tensor) -> None:
    """Copy a whole tensor into a parameter, sharded or not (each rank keeps its own shard; no
    communication, since every rank holds the same whole tensor)."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    if isinstance(target, DTensor):
        shard = distribute_tensor(source.to(target.device, target.dtype), target.device_mesh, target.placements,
                                  src_data_rank=None)
        target.to_local().copy_(shard.to_local())
    else:
        target.copy_(source.to(target.device, target.dtype))


def local_optimizer_state(state: dict[str, Any]) -> dict[str, Any]:
    """An optimizer state_dict with each sharded tensor replaced by this rank's shard (a plain tensor),
    so it saves and loads like any other (one file per rank)."""
    from torch.distributed.tensor import DTensor

    def local(value: Any) -> Any:
        return value.to_local() if isinstance(value, DTensor) else value

    return {**state, "state": {index: {key: local(value) for key, value in entry.items()}
                               for index, entry in state["state"].items()}}


def reshard_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """After load_state_dict of a local_optimizer_state: the moment tensors become shards of their
    parameters again (scalars such as Adam's step stay plain)."""
    from torch.distributed.tensor import DTensor

    for param, entry in optimizer.state.items():
        if not isinstance(param, DTensor):
            continue
        for key, value in entry.items():
            if isinstance(value, torch.Tensor) and not isinstance(value, DTensor) and value.dim() > 0:
                entry[key] = DTensor.from_local(value.to(param.device), param.device_mesh, param.placements,
                                                shape=param.shape, stride=param.stride())
