"""RQ-KMeans semantic IDs: residual k-means straight on the item embeddings, no encoder or decoder.

Level 1 clusters the embeddings into `codebook_size` centres; each next level clusters what the levels
before it left over (the residuals). GRID (Ju et al. 2025, arXiv 2507.22224) found these IDs better than
an RQ-VAE's for TIGER on Amazon data; here they are an option beside the paper's RQ-VAE.
"""

from __future__ import annotations

import torch

from methods.semantic_ids.rqvae import kmeans

ITERATIONS = 50  # Lloyd iterations per level (part of the IDs' cache key)


def kmeans_plus_plus(points: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii 2007): each next centre drawn with probability proportional
    to its squared distance from the nearest centre so far, so well-separated groups each get a centre."""
    k = min(k, points.shape[0])
    chosen = [int(torch.randint(points.shape[0], (1,), generator=generator))]
    nearest = torch.cdist(points, points[chosen[-1]][None]).squeeze(1).pow(2)
    for _ in range(k - 1):
        weights = nearest.double()
        index = int(torch.multinomial(weights / weights.sum(), 1, generator=generator)) if weights.sum() > 0 \
            else int(torch.randint(points.shape[0], (1,), generator=generator))
        chosen.append(index)
        nearest = torch.minimum(nearest, torch.cdist(points, points[index][None]).squeeze(1).pow(2))
    return points[chosen].clone()


def rq_kmeans(vectors: torch.Tensor, levels: int, codebook_size: int, seed: int,
              iterations: int = ITERATIONS) -> tuple[torch.Tensor, dict[str, float]]:
    """(codes [items, levels], facts): each level's nearest centre (k-means++ seeding, then Lloyd), and the
    share of the embeddings' variance (about their mean) that the sum of the chosen centres leaves
    unexplained."""
    generator = torch.Generator().manual_seed(seed)
    vectors = vectors.float()
    residual = vectors.clone()
    codes = []
    for _ in range(levels):
        centres = kmeans(residual, codebook_size, iterations, generator,
                         start=kmeans_plus_plus(residual, codebook_size, generator))
        assign = torch.cdist(residual, centres).argmin(1)
        codes.append(assign)
        residual = residual - centres[assign]
    spread = float((vectors - vectors.mean(0)).pow(2).sum())
    return torch.stack(codes, 1), {"unexplained_variance": float(residual.pow(2).sum()) / max(spread, 1e-12),
                                   "kmeans_iterations": float(iterations)}
