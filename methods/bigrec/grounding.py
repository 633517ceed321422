"""Ground generated text to items: distance from its embedding to every item's embedding.

BIGRec ranks all items by L2 distance (`torch.cdist`) to the top beam's embedding. We need a
score for every item, so the FAISS search asks for k = N neighbours of an exact flat index
and scatters them back to item order; `numpy` is the brute-force reference the tests hold
FAISS to, `torch` computes all distances on the GPU.
"""

from __future__ import annotations

import numpy as np

BACKENDS = ("faiss", "numpy", "torch")
# faiss-gpu's flat search supports k <= 2048; beyond that we fall back to torch on the GPU.
FAISS_GPU_MAX_K = 2048


def normalise_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def numpy_distances(queries: np.ndarray, items: np.ndarray, metric: str) -> np.ndarray:
    """Brute force, in float64: L2 distance, or cosine distance 1 - cos."""
    q, x = queries.astype(np.float64), items.astype(np.float64)
    if metric == "cosine":
        return (1.0 - normalise_rows(q) @ normalise_rows(x).T).astype(np.float32)
    squared = (q * q).sum(1)[:, None] + (x * x).sum(1)[None, :] - 2.0 * q @ x.T
    return np.sqrt(np.clip(squared, 0.0, None)).astype(np.float32)


class ItemIndex:
    """Exact nearest-neighbour index over item embeddings; `distances` returns (B, N), lower = closer."""

    def __init__(self, items: np.ndarray, metric: str, backend: str = "faiss", device: str = "cpu") -> None:
        if metric not in ("l2", "cosine"):
            raise ValueError(f"metric must be 'l2' or 'cosine', got {metric!r}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        items = np.ascontiguousarray(items, dtype=np.float32)
        self.items = normalise_rows(items) if metric == "cosine" else items
        self.metric = metric
        self.backend = backend
        self.device = device
        self.num_items = items.shape[0]
        self._index = self._faiss_index() if backend == "faiss" else None
        self._torch_items = None

    def _faiss_index(self):  # noqa: ANN202 - faiss has no type stubs
        import faiss

        dim = self.items.shape[1]
        index = faiss.IndexFlatIP(dim) if self.metric == "cosine" else faiss.IndexFlatL2(dim)
        index.add(self.items)
        gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
        if self.device.startswith("cuda") and gpus > 0 and self.num_items <= FAISS_GPU_MAX_K:
            self._gpu_resources = faiss.StandardGpuResources()
            index = faiss.index_cpu_to_gpu(self._gpu_resources, 0, index)
        return index

    def distances(self, queries: np.ndarray) -> np.ndarray:
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if self.metric == "cosine":
            queries = normalise_rows(queries).astype(np.float32)
        if self.backend == "numpy":
            return numpy_distances(queries, self.items, self.metric)
        if self.backend == "torch":
            return self._torch_distances(queries)
        found, ids = self._index.search(queries, self.num_items)
        # IndexFlatL2 reports squared L2; IndexFlatIP reports the cosine similarity.
        values = np.sqrt(np.clip(found, 0.0, None)) if self.metric == "l2" else 1.0 - found
        out = np.empty((queries.shape[0], self.num_items), dtype=np.float32)
        np.put_along_axis(out, ids, values.astype(np.float32), axis=1)
        return out

    def _torch_distances(self, queries: np.ndarray) -> np.ndarray:
        import torch

        if self._torch_items is None:
            self._torch_items = torch.from_numpy(self.items).to(self.device)
        q = torch.from_numpy(queries).to(self.device)
        if self.metric == "cosine":
            return (1.0 - q @ self._torch_items.T).cpu().numpy()
        return torch.cdist(q, self._torch_items, p=2).cpu().numpy()
