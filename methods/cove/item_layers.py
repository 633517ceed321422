"""CoVE's item tables: one input embedding and one output-head row per item, optionally hashed.

ratio = 1: plain tables, row i belongs to item i alone.
ratio > 1: both tables have |S| = ceil(N / ratio) rows and item i uses the mean of its k hashed
rows (CoVE §3.2). The input table and the head are separate parameters (as in the authors'
code), so memory is 2·|S|·d instead of 2·N·d.
"""

from __future__ import annotations

import math

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
        # Noise from the CPU generator, so a seed gives the same tables on every device; scaled in place
        # (the same std·noise + mean), so building a table costs one table-sized temporary, not three.
        noise = torch.randn(self.weight.shape, dtype=torch.float32).to(reference.device)
        with torch.no_grad():
            self.weight.copy_(noise.mul_(std).add_(mean))

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
# ChunkedLogSumExp's one pass falls back to two when a column's exp-sum is below e^-this (fp32's normal
# range ends near e^-87; 50 leaves the largest terms ~16 decimal digits above it).
SINGLE_PASS_UNDERFLOW = 50.0


class ItemHead(ItemTable):
    """Output head over items: logit(h, i) = (1/k) Σ_j h · W[h_j(i)] = h · v(i).

    Hashed: the products of every shared row with every state, P = W·hᵀ (|S| x B), are computed once
    (`project`), then each item's logit is the mean of its k rows of P (`logits_from`, one fused
    `embedding_bag` per item slice). No N x d item matrix is ever built (at 10M items and d = 576 it
    would be 23 GB whatever the ratio), and a slice of the catalogue costs k row reads per item, not a
    matmul: P is laid out |S| x B so each read serves all B requests at once. Ratio 1: a plain matmul
    with the item rows.
    Logits are always fp32, also under bf16 autocast: ranks count ties against the target, and
    bf16's 8-bit mantissa makes many of N logits equal (a biased comparison with fp32 scorers).
    """

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.logits(hidden, 0, self.num_items)

    def logits(self, hidden: torch.Tensor, start: int, end: int) -> torch.Tensor:
        """(..., end - start) fp32 logits of items start..end-1 for (..., d) states."""
        flat = self.logits_from(self.project(hidden.reshape(-1, hidden.shape[-1])), start, end)
        return flat.reshape(*hidden.shape[:-1], end - start)

    def project(self, hidden: torch.Tensor) -> torch.Tensor:
        """What every item slice reads, computed once per batch of (B, d) states: hashed, P = W·hᵀ
        (|S| x B, fp32); ratio 1, the fp32 states themselves."""
        with torch.autocast(device_type=autocast_device_type(hidden), enabled=False):
            h = hidden.float()
            return h if self.ratio == 1 else self.weight.float() @ h.T

    def logits_from(self, projected: torch.Tensor, start: int, end: int) -> torch.Tensor:
        """(B, end - start) fp32 logits of items start..end-1 from `project`'s output (for callers that
        stream the catalogue in slices, bench.runs.evaluate). Hashed: a transposed view."""
        with torch.autocast(device_type=autocast_device_type(projected), enabled=False):
            if self.ratio == 1:
                return projected @ self.weight[start:end].float().T
            return F.embedding_bag(self.codes[start:end], projected, mode="mean").T

    def item_major_logits(self, projected: torch.Tensor, start: int, end: int) -> torch.Tensor:
        """The same logits as an (end - start, B) view: hashed, the layout they are computed in."""
        return self.logits_from(projected, start, end).T

    def target_logits_from(self, projected: torch.Tensor, targets: torch.Tensor) -> torch.Tensor | None:
        """(B,) logit of request b's target b, bit for bit what `logits_from` gives that item in any slice
        (hashed: the same per-item mean of k rows); None at ratio 1, where a matmul's result can depend on
        the slice's shape."""
        if self.ratio == 1:
            return None
        with torch.autocast(device_type=autocast_device_type(projected), enabled=False):
            return F.embedding_bag(self.codes[targets], projected, mode="mean").diagonal()

    def cross_entropy(self, hidden: torch.Tensor, targets: torch.Tensor, chunk: int = ITEM_CHUNK) -> torch.Tensor:
        """Mean item cross-entropy of (T, d) states against (T,) target items, exact at any catalogue size.

        Up to `chunk` items it is F.cross_entropy over the full logits. Beyond, a (T, N) logit matrix
        would not fit (640 targets x 10M items x 4 B = 26 GB), so the log-sum-exp is taken item slice by
        item slice and each slice's logits are recomputed in the backward pass instead of stored
        (ChunkedLogSumExp): peak memory O(T x chunk), the same loss and gradients. This is the idea of
        Cut Cross-Entropy (Wijmans et al. 2024, "Cut Your Losses in Large-Vocabulary Language Models")
        in plain PyTorch, without its fused kernel; nothing is sampled.
        """
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
            projected = self.project(h)
            lse = ChunkedLogSumExp.apply(projected, self.weight if self.ratio == 1 else None, self, chunk,
                                         torch.is_grad_enabled() and projected.requires_grad)
            target_logits = (h * self.vectors(targets).float()).sum(-1)
            return (lse - target_logits).mean()


class ChunkedLogSumExp(torch.autograd.Function):
    """log Σ_i exp(logit(t, i)) over all N items for each of T states, one item slice at a time, from
    `ItemHead.project`'s output. Inputs: the projection and, for ratio 1, the item rows (hashed: None; the
    rows reach the loss through the projection's own autograd graph).

    Ratio 1, or without a gradient: forward keeps only the log-sum-exp, and backward recomputes each
    slice's logits and accumulates the gradient into ONE buffer the size of its input (per-slice autograd
    would zero and add a |S| x T gradient for every slice: 153 x 1.6 GB at 10M items).
    Hashed, with a gradient: ONE pass. Every item's logit is a mean of k rows of P, so m_t = max_s P[s, t]
    bounds it from above; forward sums exp(logit - m_t) <= 1 (no overflow, no running maximum) and, in
    the same pass, scatters those weights into the rows they came from. Backward only rescales that
    buffer by exp(m_t - lse_t)·grad_t: the slices are not gathered and exponentiated a second time.
    Should a column's sum come out below e^-SINGLE_PASS_UNDERFLOW, that batch falls back to the two-pass
    form, so no precision is lost to underflow. It takes a column of P spread over more than
    SINGLE_PASS_UNDERFLOW·k/(k-1) (67 at k = 4): the item holding the column's largest entry has a logit
    of at least m_t - (k-1)/k·(m_t - min_s P[s, t])."""

    @staticmethod
    def forward(ctx: object, projected: torch.Tensor, weight: torch.Tensor | None,  # type: ignore[override]
                head: ItemHead, chunk: int, with_gradient: bool = False) -> torch.Tensor:
        ctx.head, ctx.chunk, ctx.accumulated = head, chunk, None
        if weight is None and with_gradient:
            lse, accumulated = ChunkedLogSumExp._one_pass(projected, head, chunk)
            if accumulated is not None:
                ctx.accumulated = accumulated  # not save_for_backward: backward rescales it in place, once
                ctx.save_for_backward(projected, weight, lse)
                return lse
        parts = [head.item_major_logits(projected, first, min(first + chunk, head.num_items)).logsumexp(0)
                 for first in range(0, head.num_items, chunk)]
        lse = torch.stack(parts).logsumexp(0)
        ctx.save_for_backward(projected, weight, lse)  # saved, not re-read from the head: FSDP reshards it
        return lse

    @staticmethod
    def _one_pass(projected: torch.Tensor, head: ItemHead, chunk: int) -> tuple[torch.Tensor, tuple | None]:
        """The log-sum-exp, and (Σ_i exp(logit(t, i) - m_t)/k scattered into each of item i's k rows, m)
        (None: a column underflowed, use the two-pass form)."""
        bound = projected.max(0).values  # (T,) >= every item's logit: a mean of k entries of its column
        total = torch.zeros_like(bound)
        accumulated = torch.zeros_like(projected)
        for first in range(0, head.num_items, chunk):
            end = min(first + chunk, head.num_items)
            weights = head.item_major_logits(projected, first, end).sub_(bound).exp_()  # in place: its own
            total += weights.sum(0)
            weights /= head.num_hashes
            codes = head.codes[first:end].long()
            for j in range(head.num_hashes):
                accumulated.index_add_(0, codes[:, j], weights)
        if bool((total < math.exp(-SINGLE_PASS_UNDERFLOW)).any()):
            return bound, None
        return bound + total.log(), (accumulated, bound)

    @staticmethod
    def backward(ctx: object, grad_lse: torch.Tensor) -> tuple:  # type: ignore[override]
        with torch.autocast(device_type=autocast_device_type(grad_lse), enabled=False):  # fp32, as forward
            return ChunkedLogSumExp._backward(ctx, grad_lse)

    @staticmethod
    def _backward(ctx: object, grad_lse: torch.Tensor) -> tuple:
        projected, weight, lse = ctx.saved_tensors
        head, chunk = ctx.head, ctx.chunk
        grad_lse = grad_lse.float()
        if ctx.accumulated is not None:  # one pass: forward already scattered exp(logit - m_t)/k
            # Rescaled in place and handed over: a second backward (retain_graph) takes the two-pass form.
            (accumulated, bound), ctx.accumulated = ctx.accumulated, None
            return accumulated.mul_((bound - lse).exp_().mul_(grad_lse)), None, None, None, None
        grad_projected = torch.zeros_like(projected)
        rows = None if weight is None else weight.float()
        grad_weight = torch.zeros_like(rows) if rows is not None and ctx.needs_input_grad[1] else None
        for first in range(0, head.num_items, chunk):
            end = min(first + chunk, head.num_items)
            # d lse_t / d logit(t, i) = softmax(t, i), laid out item-major (items x T) as computed.
            logits = head.item_major_logits(projected, first, end) if rows is None else \
                (projected @ rows[first:end].T).T  # ratio 1: the saved rows, as forward's
            weights = logits.sub_(lse).exp_().mul_(grad_lse)  # in place: the slice's logits are its own
            if rows is not None:
                grad_projected += weights.T @ rows[first:end]
                if grad_weight is not None:
                    grad_weight[first:end] = weights @ projected
            else:  # logit(t, i) = mean_j P[code_j(i), t]: each of the item's k code rows gets weight / k
                weights /= head.num_hashes
                codes = head.codes[first:end].long()
                for j in range(head.num_hashes):
                    grad_projected.index_add_(0, codes[:, j], weights)
        if grad_weight is not None:
            grad_weight = grad_weight.to(weight.dtype)
        return grad_projected, grad_weight, None, None, None


def autocast_device_type(tensor: torch.Tensor) -> str:
    """The autocast context that could be active for this tensor (meta tensors: the CPU's)."""
    return tensor.device.type if tensor.device.type in ("cuda", "cpu", "xpu", "mps") else "cpu"


def item_table_bytes(*tables: ItemTable) -> int:
    """Bytes of the trainable item rows (what compression saves): Σ |S|·d·element size."""
    return sum(t.weight.numel() * t.weight.element_size() for t in tables)


def item_softmax_form(num_items: int, loss: str, ratio: int = 1) -> str:
    """How the item cross-entropy was computed (exact either way; only memory and time differ)."""
    if loss == "all_tokens" or num_items <= ITEM_CHUNK:
        return "full softmax over all items"
    how = ("one pass, the gradient scattered in forward against an upper bound of the logits" if ratio > 1
           else "recomputed in backward")
    return (f"full softmax over all items, log-sum-exp in chunks of {ITEM_CHUNK} items, {how} "
            "(exact; cf. Cut Cross-Entropy, Wijmans et al. 2024)")
