"""Eq 3-4 search: the cosine of each query patch to its nearest reference patch, per layer.

Two implementations behind one interface give the same answers: a chunked torch matmul and FAISS
inner-product indexes (features are L2-normalised, so inner product is cosine). Banks above a budget of
reference patches per layer are searched over their coreset (model/coreset.py), so the per-image cost
stays flat as K grows; below it the search is exact.
"""
from __future__ import annotations

from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from .coreset import reduce_references


class PatchSearch(Protocol):
    def max_cosine(self, queries: torch.Tensor) -> torch.Tensor:
        """(B, L, N, W) L2-normalised -> (B, L, N) cosine to the nearest reference patch of the same layer."""


class TorchPatchSearch:
    """Exact search by matmul, chunked over query rows to bound memory at (chunk, M)."""

    def __init__(self, references: torch.Tensor, chunk_rows: int = 8192):
        self.references = references  # (L, M, W), L2-normalised
        self.chunk_rows = chunk_rows

    def max_cosine(self, queries: torch.Tensor) -> torch.Tensor:
        b, n_layers, n, w = queries.shape
        rows = queries.transpose(0, 1).reshape(n_layers, b * n, w).to(self.references.dtype)  # (L, B*N, W)
        refs_t = self.references.transpose(1, 2)  # (L, W, M)
        out = torch.cat(
            [torch.bmm(chunk, refs_t).amax(dim=-1) for chunk in rows.split(self.chunk_rows, dim=1)], dim=1
        )  # (L, B*N)
        return out.reshape(n_layers, b, n).transpose(0, 1)


class FaissPatchSearch:
    """One flat inner-product index per layer; moved to the GPU when FAISS sees one."""

    def __init__(self, references: torch.Tensor):
        import faiss

        self.indexes = []
        for layer_refs in references.float().cpu().numpy():
            index = faiss.IndexFlatIP(layer_refs.shape[1])
            index.add(np.ascontiguousarray(layer_refs))
            if faiss.get_num_gpus() > 0:
                index = faiss.index_cpu_to_all_gpus(index)
            self.indexes.append(index)

    def max_cosine(self, queries: torch.Tensor) -> torch.Tensor:
        b, n_layers, n, w = queries.shape
        host = queries.detach().float().cpu().numpy()
        out = np.empty((b, n_layers, n), dtype=np.float32)
        for layer, index in enumerate(self.indexes):
            distances, _ = index.search(np.ascontiguousarray(host[:, layer].reshape(b * n, w)), 1)
            out[:, layer] = distances[:, 0].reshape(b, n)
        return torch.from_numpy(out).to(queries.device)


def create_patch_search(
    references: torch.Tensor, backend: str, chunk_rows: int, max_references: int | None = None
) -> PatchSearch:
    """The search over (L, M, W) references; above max_references per layer, over their coreset."""
    references = reduce_references(references, max_references)
    if backend == "torch":
        return TorchPatchSearch(references, chunk_rows)
    if backend == "faiss":
        return FaissPatchSearch(references)
    raise ValueError(f"unknown nearest-neighbour backend {backend!r}; use 'torch' or 'faiss'")


def per_sample_max_cosine(queries: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """Training path where each query has its own prompts: (B, L, N, W) x (B, L, M, W) -> (B, L, N)."""
    q = F.normalize(queries, dim=-1)
    r = F.normalize(references, dim=-1)
    return torch.einsum("blnw,blmw->blnm", q, r).amax(dim=-1)
