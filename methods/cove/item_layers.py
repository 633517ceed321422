"""CoVE's item tables: one input embedding and one output-head row per item, optionally hashed.

ratio = 1: plain tables, row i belongs to item i alone.
ratio > 1: both tables have |S| = ceil(N / ratio) rows and item i uses the mean of its k hashed
rows (CoVE §3.2). The input table and the head are separate parameters (as in the authors'
code), so memory is 2·|S|·d instead of 2·N·d.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from methods.cove.hashing import UniversalHashes, num_buckets


class ItemTable(nn.Module):
    """A |S| x d table plus each item's k bucket codes (a (N, k) buffer saved with checkpoints)."""

    def __init__(self, num_items: int, dim: int, ratio: int = 1, num_hashes: int = 4, seed: int = 0,
                 device: torch.device | str | None = None) -> None:
        super().__init__()
        self.num_items, self.dim, self.ratio = num_items, dim, ratio
        items = torch.arange(num_items)
        if ratio == 1:  # no hashing: item i owns row i (k is ignored)
            codes = items[:, None]
        else:
            codes = UniversalHashes.draw(num_hashes, num_buckets(num_items, ratio), seed)(items)
        # Built where the backbone lives: a table left on the CPU beside a CUDA backbone fails on
        # the first mixed-device op (the hash codes are computed on the CPU, then moved once).
        # int32: 4 bytes per item and hash (int64 was 610 MB at 10M items x 4 hashes, more than a ratio-16
        # table of d = 128).
        self.register_buffer("codes", codes.to(device=device, dtype=torch.int32))
        self.weight = nn.Parameter(torch.empty(num_buckets(num_items, ratio), dim, device=device))
        nn.init.xavier_uniform_(self.weight)

    @property
    def num_hashes(self) -> int:
        return self.codes.shape[1]

    def init_like(self, reference: torch.Tensor) -> None:
        """Rows ~ N(mean, std) of a reference table (the base vocabulary) per channel, so item
        vectors start at the scale the transformer expects; k-averaging shrinks the std by
        sqrt(k), so rows are drawn sqrt(k) wider."""
        mean = reference.float().mean(0)
        std = reference.float().std(0) * self.num_hashes**0.5
        # Noise from the CPU generator, so a seed gives the same tables on every device.
        noise = torch.randn(self.weight.shape, dtype=torch.float32).to(reference.device)
        with torch.no_grad():
            self.weight.copy_(mean + std * noise)

    def vectors(self, items: torch.Tensor) -> torch.Tensor:
        """v(i) = (1/k) Σ_j W[h_j(i)] for item indices of any shape -> (..., d)."""
        if self.ratio == 1:
            return F.embedding(items, self.weight)
        flat = F.embedding_bag(self.codes[items.reshape(-1)], self.weight, mode="mean")
        return flat.reshape(*items.shape, self.dim)


class ItemEmbedding(ItemTable):
    """Input embedding of item tokens: e(i) = (1/k) Σ_j E[h_j(i)]."""

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        return self.vectors(items)


IGNORE_INDEX = -100  # a target position that takes no part in the loss (F.cross_entropy's default)
ITEM_CHUNK = 65536  # items gathered at a time by the hashed head: bounds its memory to B x chunk x k


class ItemHead(ItemTable):
    """Output head over items: logit(h, i) = (1/k) Σ_j h · W[h_j(i)] = h · v(i).

    Hashed: one `h @ W.T` over the |S| shared rows, then each item's k columns gathered and averaged,
    item chunk by item chunk, so no N x d item matrix is ever built (at 10M items and d = 576 it
    would be 23 GB whatever the ratio). Ratio 1: a plain matmul with the item rows.
    Logits are always fp32, also under bf16 autocast: ranks count ties against the target, and
    bf16's 8-bit mantissa makes many of N logits equal (a biased comparison with fp32 scorers).
    """

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.logits(hidden, 0, self.num_items)

    def logits(self, hidden: torch.Tensor, start: int, end: int) -> torch.Tensor:
        """(..., end - start) fp32 logits of items start..end-1: a slice of the catalogue, for callers
        that stream the catalogue in chunks (bench.runs.evaluate)."""
        with torch.autocast(device_type=autocast_device_type(hidden), enabled=False):
            h = hidden.float()
            if self.ratio == 1:
                return h @ self.weight[start:end].float().T
            projected = h @ self.weight.float().T  # (..., |S|)
            parts = [projected[..., self.codes[first:min(first + ITEM_CHUNK, end)].long()].mean(-1)
                     for first in range(start, end, ITEM_CHUNK)]
            return torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]

    def cross_entropy(self, hidden: torch.Tensor, targets: torch.Tensor, chunk: int = ITEM_CHUNK) -> torch.Tensor:
        """Mean item cross-entropy of (T, d) states against (T,) target items, exact at any catalogue size.

        Up to `chunk` items it is F.cross_entropy over the full logits. Beyond, a (T, N) logit matrix
        would not fit (640 targets x 10M items x 4 B = 26 GB), so the log-sum-exp is taken item chunk by
        item chunk and each chunk's logits are recomputed in the backward pass (activation
        checkpointing) instead of stored: peak memory O(T x chunk), the same loss and gradients. This is
        the idea of Cut Cross-Entropy (Wijmans et al. 2024, "Cut Your Losses in Large-Vocabulary Language
        Models") in plain PyTorch, without its fused kernel; nothing is sampled.
        """
        from torch.utils.checkpoint import checkpoint

        if self.num_items <= chunk:
            return F.cross_entropy(self.logits(hidden, 0, self.num_items), targets, ignore_index=IGNORE_INDEX)
        # F.cross_entropy's rules, which the full path follows: IGNORE_INDEX targets drop out of the mean
        # (all ignored: NaN), any other target outside the catalogue is an error (never a wrapped index).
        keep = targets != IGNORE_INDEX
        hidden, targets = hidden[keep], targets[keep]
        outside = targets[(targets < 0) | (targets >= self.num_items)]
        if outside.numel():
            raise IndexError(f"item cross-entropy: target {int(outside[0])} outside the catalogue of "
                             f"{self.num_items} items")
        if not targets.numel():
            return hidden.float().sum() * float("nan")
        with torch.autocast(device_type=autocast_device_type(hidden), enabled=False):
            h = hidden.float()
            # Hashed: the |S|-wide projection once; each chunk gathers its items' k columns from it.
            source = h if self.ratio == 1 else h @ self.weight.float().T

            def chunk_lse(source: torch.Tensor, start: int, end: int) -> torch.Tensor:
                if self.ratio == 1:
                    logits = source @ self.weight[start:end].float().T
                else:
                    logits = source[..., self.codes[start:end].long()].mean(-1)
                return logits.logsumexp(-1)

            parts = [checkpoint(chunk_lse, source, first, min(first + chunk, self.num_items), use_reentrant=False)
                     for first in range(0, self.num_items, chunk)]
            lse = torch.stack(parts, dim=-1).logsumexp(-1)
            target_logits = (h * self.vectors(targets).float()).sum(-1)
            return (lse - target_logits).mean()


def autocast_device_type(tensor: torch.Tensor) -> str:
    """The autocast context that could be active for this tensor (meta tensors: the CPU's)."""
    return tensor.device.type if tensor.device.type in ("cuda", "cpu", "xpu", "mps") else "cpu"


def item_table_bytes(*tables: ItemTable) -> int:
    """Bytes of the trainable item rows (what compression saves): Σ |S|·d·element size."""
    return sum(t.weight.numel() * t.weight.element_size() for t in tables)


def item_softmax_form(num_items: int, loss: str) -> str:
    """How the item cross-entropy was computed (exact either way; only memory differs)."""
    if loss == "all_tokens" or num_items <= ITEM_CHUNK:
        return "full softmax over all items"
    return (f"full softmax over all items, log-sum-exp in chunks of {ITEM_CHUNK} items recomputed in backward "
            "(exact; cf. Cut Cross-Entropy, Wijmans et al. 2024)")
