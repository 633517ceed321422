"""Universal hashing of item ids into a small shared table (CoVE §3.2, "embedding compression").

Each item i gets k bucket indices h_j(i) = ((a_j·i + b_j) mod p_j) mod |S|, j = 1..k, from the
classic Carter–Wegman family: p_j a large prime, a_j and b_j drawn from a seeded RNG with
a_j in [p_j/2, p_j] and b_j in [0, p_j] (the ranges the authors' code uses). Two items share
all k buckets only with probability ~|S|^-k, so the mean of k rows stays item-specific even
when |S| = N / ratio is much smaller than N.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch

# Large primes (> 10^7, below 2^27 so a·i stays far inside int64 for any catalogue size);
# the same constants as the authors' emb_comp_utils.py, so hashes match theirs for a seed.
LARGE_PRIMES = (
    88579013, 24463903, 10637969, 11843057, 25772207, 90744047, 67182551, 25752593,
    96196811, 99715337, 21859141, 53504441, 47164961, 71704109, 77636203, 29129671,
)


def num_buckets(num_items: int, ratio: int) -> int:
    """|S| = ceil(N / ratio): the rows of the shared table (ratio 1: one row per item)."""
    if ratio < 1:
        raise ValueError(f"compression ratio must be >= 1, got {ratio}")
    return max(1, math.ceil(num_items / ratio))


@dataclass(frozen=True)
class UniversalHashes:
    """k hash functions h_j(i) = ((a_j·i + b_j) mod p_j) mod buckets."""

    p: tuple[int, ...]
    a: tuple[int, ...]
    b: tuple[int, ...]
    buckets: int

    @classmethod
    def draw(cls, num_hashes: int, buckets: int, seed: int) -> UniversalHashes:
        if not 1 <= num_hashes <= len(LARGE_PRIMES):
            raise ValueError(f"num_hashes must be in 1..{len(LARGE_PRIMES)}, got {num_hashes}")
        rng = random.Random(seed)
        p = LARGE_PRIMES[:num_hashes]
        a = tuple(rng.randint(prime // 2, prime) for prime in p)
        b = tuple(rng.randint(0, prime) for prime in p)
        return cls(p, a, b, buckets)

    def __call__(self, items: torch.Tensor) -> torch.Tensor:
        """Bucket codes (..., k) for item indices (...)."""
        p = torch.tensor(self.p, dtype=torch.long, device=items.device)
        a = torch.tensor(self.a, dtype=torch.long, device=items.device)
        b = torch.tensor(self.b, dtype=torch.long, device=items.device)
        return ((items.long()[..., None] * a + b) % p) % self.buckets
