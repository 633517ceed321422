"""How CoVE scores: which requests go together in one forward pass (fewer padded tokens, the same scores),
and the forward itself, eager or compiled."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def scoring_chunks(lengths: list[int], batch_size: int, length_buckets: int = 0,
                   max_padding: float = 0.0) -> list[list[int]]:
    """The request positions of each scoring forward. Without length_buckets: request order, batch_size at a
    time. With it: sorted by length, at most length_buckets per forward, and with max_padding a forward also
    closes before the next (longer) prompt would make its padding exceed that fraction of its tokens."""
    if not length_buckets:
        return [list(range(start, min(start + batch_size, len(lengths))))
                for start in range(0, len(lengths), batch_size)]
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    chunks: list[list[int]] = []
    current: list[int] = []
    real = 0
    for position in order:
        width = lengths[position]  # the longest so far: sorted ascending
        full = len(current) >= length_buckets
        total = width * (len(current) + 1)
        too_padded = max_padding > 0 and bool(current) and total - (real + width) > max_padding * total
        if full or too_padded:
            chunks.append(current)
            current, real = [], 0
        current.append(position)
        real += width
    if current:
        chunks.append(current)
    return chunks


def last_states_forward(owner: Any, compiled: bool) -> Callable[[Any, Any], Any]:
    """(ids, mask) -> fp32 last-position hidden states of `owner.model` (read at every call, so a model
    refreshed after training is the one scored). Compiled with torch.compile's default shape policy: the
    first shape gets a static graph, the next a shape-generic one, so length-bucketed batches reuse it."""
    def forward(ids: Any, mask: Any) -> Any:
        return owner.model.hidden_states(ids, mask)[:, -1].float()

    if not compiled:
        return forward
    import torch

    return torch.compile(forward)
