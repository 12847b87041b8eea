"""Greedy k-centre coreset of a reference patch bank: large banks searched at the cost of a fixed budget.

Eq 3-4 compares every query patch with every reference patch, so the search grows linearly with K. Above
a budget of `m` reference patches per layer, the search runs over a coreset instead: the farthest-point
(greedy k-centre) selection of PatchCore (Roth et al., CVPR 2022), which picks m patches such that every
reference patch lies within the smallest radius it can of a selected one. The nearest-patch cosine over the
coreset is then within that radius of the exact one, and the per-image cost is that of m patches whatever K
is. Selection runs once per bank, when the bank is built, on a seeded random projection to `projection_dim`
dimensions (as PatchCore does) so it costs O(M * m * projection_dim), not O(M * m * W); the indices are
stored in the bank (model/bank.py), so replicas never recompute them, and the bank of a subset of the
prompts (leave-one-out calibration) keeps the selected rows of its prompts (`restrict_to_prompts`) instead of
selecting again.

Deterministic: the same bank gives the same coreset (seeded projection, start at the first patch), so
scores stay independent of the batch and of the replica.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def greedy_coreset(features: torch.Tensor, budget: int, projection_dim: int = 128, seed: int = 0) -> torch.Tensor:
    """(M, W) -> indices (m,) of a greedy k-centre coreset, m = min(budget, M), in selection order.

    Rows are projected and L2-normalised, so the distance to the closest selected row is tracked as
    1 - cosine (the residual of Eq 3) with one (M, P) matrix-vector product per selected row.
    """
    if budget < 1:
        raise ValueError(f"coreset budget must be >= 1, got {budget}")
    count, width = features.shape
    if count <= budget:
        return torch.arange(count, device=features.device)
    points = features.detach().float().cpu()
    if width > projection_dim:
        generator = torch.Generator().manual_seed(seed)
        points = points @ (torch.randn(width, projection_dim, generator=generator) / projection_dim**0.5)
    # numpy: a per-row loop of small products costs less there than torch's per-op dispatch.
    unit = F.normalize(points, dim=1).numpy()
    selected = np.empty(budget, dtype=np.int64)
    selected[0] = 0
    nearest = 1.0 - unit @ unit[0]  # (M,) 1 - cosine to the closest selected row
    for i in range(1, budget):
        selected[i] = int(np.argmax(nearest))
        np.minimum(nearest, 1.0 - unit @ unit[selected[i]], out=nearest)
    return torch.from_numpy(selected).to(features.device)


def layer_coresets(references: torch.Tensor, budget: int) -> torch.Tensor:
    """(L, M, W) per-layer reference patches -> (L, min(M, budget)) row indices: each layer's own coreset."""
    return torch.stack([greedy_coreset(layer, budget) for layer in references])


def select_rows(references: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """(L, M, W) gathered at (L, m) row indices per layer -> (L, m, W)."""
    index = indices.to(references.device)[..., None].expand(-1, -1, references.shape[-1])
    return references.gather(1, index)


def restrict_to_prompts(indices: torch.Tensor, shots: int, rows: int, keep: list[int]) -> torch.Tensor:
    """Coreset indices (L, m) into K * N rows -> those of the prompts ``keep``, renumbered into len(keep) * N rows.

    Layers lose different counts; each is padded to the longest by repeating its first kept row (a duplicate
    changes no nearest-patch maximum). A layer that keeps none of its selected rows keeps the first row of
    the subset, so every layer has a reference to compare with.
    """
    per_prompt = rows // shots
    position = torch.full((shots,), -1, dtype=torch.long)
    position[torch.tensor(keep)] = torch.arange(len(keep))
    prompt, offset = indices.cpu() // per_prompt, indices.cpu() % per_prompt
    renumbered = position[prompt] * per_prompt + offset  # (L, m), negative where the prompt is dropped
    layers = [row[row >= 0] for row in renumbered]
    layers = [row if len(row) else torch.zeros(1, dtype=torch.long) for row in layers]
    width = max(len(row) for row in layers)
    return torch.stack([torch.cat([row, row[:1].expand(width - len(row))]) for row in layers]).to(indices.device)


def reduce_references(references: torch.Tensor, budget: int | None) -> torch.Tensor:
    """(L, M, W) per-layer reference patches -> (L, min(M, budget), W): each layer's own coreset.

    budget None keeps the bank whole (exact search).
    """
    if budget is None or references.shape[1] <= budget:
        return references
    return select_rows(references, layer_coresets(references, budget))
