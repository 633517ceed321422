"""CoVE on any device: item tables follow the backbone, item logits are fp32 under bf16 autocast.

A CUDA machine is lent rarely, so the CPU tests here stand in for it: the `meta` device plays a
second device (every parameter and buffer must follow the backbone there), and CPU bf16 autocast
plays CUDA's. The CUDA tests run only where a GPU is present.
"""

from __future__ import annotations

import pytest
import torch
from tiny import tiny_backbone

from methods.cove.item_layers import ItemHead
from methods.cove.model import CoVEModel, attach_lora

CUDA = pytest.mark.skipif(not torch.cuda.is_available(),
                          reason="no CUDA device here; scripts/gpu_run.sh runs these first on a lent GPU")


def build(device: str, ratio: int) -> CoVEModel:
    lm, _ = tiny_backbone(["a list of items"])
    lm = attach_lora(lm.to(device), 4, 8.0, 0.0, ["q_proj", "v_proj"])
    return CoVEModel(lm, base_vocab=lm.get_input_embeddings().weight.shape[0], num_items=30, ratio=ratio,
                     num_hashes=2)


@pytest.mark.parametrize("ratio", [1, 4])
def test_item_tables_are_built_on_the_backbones_device(ratio: int):
    model = build("meta", ratio)
    placed = {name: t.device.type for name, t in [*model.named_parameters(), *model.named_buffers()]}
    assert {"item_embedding.weight", "item_head.weight", "item_head.codes"} <= set(placed)
    assert set(placed.values()) == {"meta"}, {n: d for n, d in placed.items() if d != "meta"}


def test_item_table_init_does_not_depend_on_the_device():
    torch.manual_seed(0)
    cpu = build("cpu", 4)
    torch.manual_seed(0)
    again = build("cpu", 4)
    assert torch.equal(cpu.item_embedding.weight, again.item_embedding.weight)


def test_item_logits_are_fp32_and_exact_under_bf16_autocast():
    torch.manual_seed(0)
    head = ItemHead(2000, 64, ratio=4, num_hashes=2)
    hidden = torch.randn(3, 64).to(torch.bfloat16)
    reference = hidden.float() @ head.vectors(torch.arange(2000)).float().T
    with torch.autocast("cpu", dtype=torch.bfloat16):
        scores = head(hidden)
    assert scores.dtype == torch.float32
    assert torch.allclose(scores, reference, rtol=0, atol=1e-5)  # fp32 rounding only, never bf16's
    # bf16 logits would put many of the 2,000 items on equal scores (ties count against the target).
    assert len(torch.unique(scores[0])) > len(torch.unique(reference[0].to(torch.bfloat16))) + 100


@CUDA
def test_cove_builds_trains_and_scores_on_cuda():
    model = build("cuda", 4)
    assert {t.device.type for t in [*model.parameters(), *model.buffers()]} == {"cuda"}
    ids = torch.randint(0, model.base_vocab + 30, (2, 7), device="cuda")
    mask = torch.ones_like(ids)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        scores = model.item_scores(ids, mask)
    assert scores.dtype == torch.float32 and scores.shape == (2, 30)
    torch.nn.functional.cross_entropy(scores, torch.tensor([1, 2], device="cuda")).backward()
    assert model.item_head.weight.grad is not None
