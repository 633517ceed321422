"""RQ-VAE (Zeghidour et al. 2021; TIGER, Rajput et al. 2023, Sec. 3.1): an MLP encoder maps an item's
text embedding to a latent; `levels` codebooks quantise it residually (level l quantises what levels
< l left over); a mirrored MLP decoder reconstructs the embedding from the sum of chosen codes.

Loss = ||x - decode(sum e_l)||^2 + sum_l ( ||sg[r_l] - e_l||^2 + beta ||r_l - sg[e_l]||^2 ),
squared errors summed over dimensions, with the straight-through estimator from the quantised
latent to the encoder. Each level's codebook starts from k-means over that level's residuals of the
whole catalogue (TIGER: k-means init on the first batch; the catalogue here is one batch of ~12k rows).
"""

from __future__ import annotations

import torch
from torch import nn


def mlp(widths: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(widths) - 1):
        layers.append(nn.Linear(widths[i], widths[i + 1]))
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def kmeans(points: torch.Tensor, k: int, iterations: int = 20,
           generator: torch.Generator | None = None, start: torch.Tensor | None = None) -> torch.Tensor:
    """Lloyd's k-means from `start`, else from k distinct random points; an emptied cluster is re-seeded at
    the point farthest from its centre, so all k codes start in use."""
    k = min(k, points.shape[0])
    centres = start.clone() if start is not None else \
        points[torch.randperm(points.shape[0], generator=generator)[:k]].clone()
    for _ in range(iterations):
        distances = torch.cdist(points, centres)
        assign = distances.argmin(1)
        counts = torch.bincount(assign, minlength=k)
        sums = torch.zeros_like(centres).index_add_(0, assign, points)
        filled = counts > 0
        centres[filled] = sums[filled] / counts[filled, None]
        if (~filled).any():
            far = distances.min(1).values.topk(int((~filled).sum())).indices
            centres[~filled] = points[far]
    return centres


class RQVAE(nn.Module):
    def __init__(self, input_dim: int, hidden: list[int], latent_dim: int, levels: int, codebook_size: int,
                 beta: float = 0.25) -> None:
        super().__init__()
        self.encoder = mlp([input_dim, *hidden, latent_dim])
        self.decoder = mlp([latent_dim, *reversed(hidden), input_dim])
        self.codebooks = nn.ParameterList(nn.Parameter(torch.randn(codebook_size, latent_dim) * 0.01)
                                          for _ in range(levels))
        self.beta = beta
        self.register_buffer("input_mean", torch.zeros(input_dim))  # set by train_rqvae
        self.register_buffer("input_std", torch.ones(input_dim))

    @torch.no_grad()
    def init_codebooks(self, x: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """k-means of each level's residuals, level by level."""
        residual = self.encoder(x)
        for book in self.codebooks:
            centres = kmeans(residual, book.shape[0], generator=generator)
            book.data[:centres.shape[0]] = centres
            residual = residual - book[torch.cdist(residual, book).argmin(1)]

    @torch.no_grad()
    def restart_unused_codes(self, x: torch.Tensor, generator: torch.Generator | None = None) -> int:
        """Codes no item chose are moved onto random items' residuals at their level (as cornac's TIGER
        does every epoch): without it the encoder gathers the catalogue onto a few codes and most IDs
        collide. Returns how many codes were restarted."""
        residual, restarted = self.encoder(x), 0
        for book in self.codebooks:
            index = torch.cdist(residual, book).argmin(1)
            unused = torch.bincount(index, minlength=book.shape[0]) == 0
            count = int(unused.sum())
            if count:
                picks = torch.randint(0, residual.shape[0], (count,), generator=generator)
                book.data[unused] = residual[picks]
                restarted += count
                index = torch.cdist(residual, book).argmin(1)
            residual = residual - book[index]
        return restarted

    def quantise(self, latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(codes (B, levels), quantised latent (B, d), the codebook + commitment loss)."""
        residual, quantised, codes = latent, torch.zeros_like(latent), []
        rq_loss = latent.new_zeros(())
        for book in self.codebooks:
            index = torch.cdist(residual.detach(), book.detach()).argmin(1)
            chosen = book[index]
            codebook = (chosen - residual.detach()).pow(2).sum(-1).mean()
            commitment = (residual - chosen.detach()).pow(2).sum(-1).mean()
            rq_loss = rq_loss + codebook + self.beta * commitment
            quantised = quantised + chosen
            residual = residual - chosen.detach()
            codes.append(index)
        return torch.stack(codes, 1), quantised, rq_loss

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(total loss, reconstruction loss, codes)."""
        latent = self.encoder(x)
        codes, quantised, rq_loss = self.quantise(latent)
        straight_through = latent + (quantised - latent).detach()
        # Squared error summed over the embedding's dimensions: averaged over them, it is ~1/dim of the
        # codebook terms and the encoder collapses every item onto one code (a known RQ-VAE failure;
        # RQ-VAE-Recommender's "Fix codebook collapse" made the same change).
        reconstruction = (self.decoder(straight_through) - x).pow(2).sum(-1).mean()
        return reconstruction + rq_loss, reconstruction, codes

    @torch.no_grad()
    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """Codes of raw (unstandardised) vectors."""
        return self.quantise(self.encoder((x - self.input_mean) / self.input_std))[0]


def train_rqvae(vectors: torch.Tensor, hidden: list[int], latent_dim: int, levels: int, codebook_size: int,
                beta: float, epochs: int, lr: float, batch_size: int, seed: int) -> tuple[RQVAE, dict[str, float]]:
    """Fit on the catalogue's vectors, standardised per dimension (as preference_discerning's TIGER), on
    the CPU in seconds to minutes; returns the model (which standardises its input) and final losses."""
    mean, std = vectors.mean(0), vectors.std(0).clamp(min=1e-6)
    vectors = (vectors - mean) / std
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = RQVAE(vectors.shape[1], hidden, latent_dim, levels, codebook_size, beta)
    model.init_codebooks(vectors, generator)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    total = reconstruction = 0.0
    restarted = 0
    for _ in range(epochs):
        order = torch.randperm(vectors.shape[0], generator=generator)
        total = reconstruction = 0.0
        for start in range(0, len(order), batch_size):
            batch = vectors[order[start:start + batch_size]]
            loss, recon, _ = model(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(batch)
            reconstruction += float(recon.detach()) * len(batch)
        restarted = model.restart_unused_codes(vectors, generator)
    model.eval()
    model.input_mean.copy_(mean)
    model.input_std.copy_(std)
    return model, {"loss": total / len(vectors), "reconstruction_sse": reconstruction / len(vectors),
                   "codes_restarted_last_epoch": float(restarted)}
