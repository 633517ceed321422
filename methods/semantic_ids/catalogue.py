"""One catalogue's semantic IDs, built once and reused by every method asking with the same settings: item
texts embedded by MiniLM, an RQ-VAE trained on them (or residual k-means on the embeddings themselves), its
codes plus the collision digit (TIGER Sec. 3.1)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.data.types import Dataset

CACHE_FOLDER = "tiger"  # where the IDs were first cached; kept so recorded runs find theirs


@dataclass(frozen=True)
class RQVAESettings:
    """What decides the IDs besides the item texts and the seed."""

    item_fields: tuple[str, ...]
    hidden_widths: list[int]
    latent_dim: int
    levels: int
    codebook_size: int
    beta: float
    epochs: int
    lr: float
    batch_size: int
    quantiser: str = "rqvae"  # "rqvae" (TIGER) or "rqkmeans" (residual k-means on the embeddings; GRID)

    def key(self, seed: int) -> dict[str, Any]:
        if self.quantiser == "rqkmeans":  # no network: only the levels, codebook and iterations decide
            from methods.semantic_ids.rqkmeans import ITERATIONS

            return {"quantiser": "rqkmeans", "levels": self.levels, "codebook_size": self.codebook_size,
                    "iterations": ITERATIONS, "seed": seed}
        # The RQ-VAE's key as it was before other quantisers existed, so cached IDs stay found.
        return {"hidden": self.hidden_widths, "latent_dim": self.latent_dim, "levels": self.levels,
                "codebook_size": self.codebook_size, "beta": self.beta, "epochs": self.epochs, "lr": self.lr,
                "batch_size": self.batch_size, "seed": seed}


def catalogue_semantic_ids(dataset: Dataset, settings: RQVAESettings, cache_dir: Path, *, device: str, seed: int,
                           log: Callable[[str], None]) -> tuple[np.ndarray, dict[str, Any]]:
    """(ids [items, levels + 1], facts for the record): cached under cache_dir, keyed by the encoder, the
    exact item texts and the RQ-VAE settings, so a changed title or setting never reuses stale IDs."""
    from bench.train.text_embeddings import MiniLMEmbedder
    from methods.semantic_ids.ids import cache_key, load_or_build

    texts = [dataset.catalogue.describe(i, settings.item_fields) for i in range(dataset.num_items)]
    # Keyed without loading the encoder: cached IDs (e.g. carried to a GPU machine) need no encoder.
    path = cache_dir / CACHE_FOLDER / "semantic_ids" / f"{cache_key(MiniLMEmbedder.id, texts, settings.key(seed))}.npy"
    ids, facts, reused = load_or_build(path, lambda: _build(texts, settings, cache_dir, device, seed, log))
    text = dataset.catalogue.text or []
    return ids, {**facts, "encoder": MiniLMEmbedder.id, "cache": "reused" if reused else "built",
                 "file": path.name, "text_fields": list(settings.item_fields),
                 # Share of items that have each asked-for field (a field no item has adds nothing).
                 "text_field_coverage": {f: 1.0 if f == "title" else
                                         round(sum(1 for t in text if t.get(f)) / max(len(texts), 1), 4)
                                         for f in settings.item_fields}}


def _build(texts: list[str], s: RQVAESettings, cache_dir: Path, device: str, seed: int,
           log: Callable[[str], None]) -> tuple[np.ndarray, dict[str, Any]]:
    import torch

    from bench.train.text_embeddings import MiniLMEmbedder, title_embeddings
    from methods.semantic_ids.ids import id_statistics, with_collision_digit
    from methods.semantic_ids.rqvae import train_rqvae

    vectors, _ = title_embeddings(MiniLMEmbedder(device=device), texts, cache_dir,
                                  folder=f"{CACHE_FOLDER}/text_embeddings")
    if s.quantiser == "rqkmeans":
        from methods.semantic_ids.rqkmeans import rq_kmeans

        log(f"semantic IDs: residual k-means on {len(texts)} item embeddings ({s.levels} levels)")
        codes, facts = rq_kmeans(torch.from_numpy(vectors), s.levels, s.codebook_size, seed)
        ids = with_collision_digit(codes.numpy())
        return ids, {**id_statistics(ids, s.codebook_size), "quantiser": "rqkmeans",
                     **{k: round(v, 6) for k, v in facts.items()}}
    log(f"semantic IDs: training the RQ-VAE on {len(texts)} item embeddings ({s.epochs} epochs)")
    model, losses = train_rqvae(torch.from_numpy(vectors), s.hidden_widths, s.latent_dim, s.levels,
                                s.codebook_size, s.beta, s.epochs, s.lr, s.batch_size, seed)
    ids = with_collision_digit(model.codes(torch.from_numpy(vectors)).numpy())
    return ids, {**id_statistics(ids, s.codebook_size), "quantiser": "rqvae",
                 **{k: round(v, 6) for k, v in losses.items()}}
