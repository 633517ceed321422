"""Item-title embeddings on disk, keyed by the embedding space and the exact title texts.

Embedding 12k titles with the base LLM takes minutes on CPU and does not depend on the
fine-tuned adapter, so it is done once per (embedder, titles). Files live under
`<cache_dir>/bigrec/title_embeddings/` (cache_dir: BENCH_CACHE_DIR, else bench.toml
[paths].cache_dir); editing any title changes the key, so stale vectors are never reused.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np

from methods.bigrec.embedders import Embedder

# Titles embedded (and saved) per step; an interrupted run loses at most one chunk.
CHUNK = 2048


def default_cache_root() -> Path:
    """The harness's cache dir (same rule as bench.run), for the bigrec/ subfolder."""
    from bench.config import load_config, resolve_path
    from bench.errors import BenchError

    try:
        config = load_config()
    except BenchError:
        config = {"paths": {}}
    return resolve_path(config, "cache_dir", "BENCH_CACHE_DIR", ".cache")


def cache_key(embedder_id: str, texts: list[str]) -> str:
    digest = hashlib.sha256(embedder_id.encode())
    digest.update(b"\0")
    digest.update(json.dumps(texts, ensure_ascii=False).encode())
    return digest.hexdigest()[:20]


def cache_file(cache_root: Path, embedder_id: str, texts: list[str]) -> Path:
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "_", embedder_id)[:60]
    return cache_root / "bigrec" / "title_embeddings" / f"{readable}-{cache_key(embedder_id, texts)}.npy"


def _save_atomically(path: Path, vectors: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    with open(tmp, "wb") as handle:
        np.save(handle, vectors)
    os.replace(tmp, path)


def title_embeddings(
    embedder: Embedder, texts: list[str], cache_root: Path, chunk: int = CHUNK
) -> tuple[np.ndarray, bool]:
    """(vectors, reused): load the cached matrix, or embed every text and store it.

    Work is saved per chunk of titles, so an interrupted run (12k titles take tens of minutes
    on a busy CPU) resumes where it stopped; the chunks are merged and removed at the end.
    """
    path = cache_file(cache_root, embedder.id, texts)
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
