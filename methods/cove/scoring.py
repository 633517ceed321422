"""Which requests CoVE scores together in one forward pass: fewer padded tokens, the same scores."""

from __future__ import annotations


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
