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
        """(B, L, N, W) -> (B, L, N) largest inner product with a (unit) reference patch of the same layer:
        for L2-normalised queries, the cosine to the nearest one."""


def trimmed_layers(references: torch.Tensor) -> list[torch.Tensor]:
    """(L, M, W) -> per layer (M, W_l) without the trailing columns that are zero in every reference row.

    Such columns add nothing to any dot product, whatever the query holds there: EfficientNet-Lite0 pads its
    40- and 80-channel layers to 112 with zeros, so searching each layer at its own width is exact and
    costs 232 instead of 336 multiply-adds per pair of patches.
    """
    used = (references != 0).any(dim=1)  # (L, W)
    positions = torch.arange(1, references.shape[-1] + 1, device=references.device)
    widths = (used * positions).amax(dim=1).clamp_min(1).tolist()
    return [layer[:, :width].contiguous() for layer, width in zip(references, widths)]


class TorchPatchSearch:
    """Exact search by matmul, per layer at its own width, chunked over query rows to bound memory at (chunk, M)."""

    def __init__(self, references: torch.Tensor, chunk_rows: int = 8192):
        self.references_t = [layer.T for layer in trimmed_layers(references)]  # (W_l, M), L2-normalised rows
        self.chunk_rows = chunk_rows

    def max_cosine(self, queries: torch.Tensor) -> torch.Tensor:
        b, n_layers, n, _ = queries.shape
        out = queries.new_empty(n_layers, b * n, dtype=self.references_t[0].dtype)  # (L, B*N)
        for layer, refs_t in enumerate(self.references_t):
            rows = queries[:, layer, :, : refs_t.shape[0]].reshape(b * n, -1).to(refs_t.dtype)
            for start in range(0, b * n, self.chunk_rows):
                chunk = rows[start : start + self.chunk_rows]
                torch.amax(chunk @ refs_t, dim=-1, out=out[layer, start : start + len(chunk)])
        return out.reshape(n_layers, b, n).transpose(0, 1)


class FaissPatchSearch:
    """One flat inner-product index per layer at its own width; moved to the GPU when FAISS sees one."""

    def __init__(self, references: torch.Tensor):
        import faiss

        self.indexes = []
        for layer_refs in trimmed_layers(references.float()):
            layer_refs = np.ascontiguousarray(layer_refs.cpu().numpy())
            index = faiss.IndexFlatIP(layer_refs.shape[1])
            index.add(layer_refs)
            if faiss.get_num_gpus() > 0:
                index = faiss.index_cpu_to_all_gpus(index)
            self.indexes.append(index)

    def max_cosine(self, queries: torch.Tensor) -> torch.Tensor:
        b, n_layers, n, w = queries.shape
        host = queries.detach().float().cpu().numpy()
        out = np.empty((b, n_layers, n), dtype=np.float32)
        for layer, index in enumerate(self.indexes):
            rows = np.ascontiguousarray(host[:, layer, :, : index.d].reshape(b * n, index.d))
            distances, _ = index.search(rows, 1)
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
