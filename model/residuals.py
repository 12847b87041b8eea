"""In-context residuals: Eq 1-2 (image level) and Eq 3-4 (patch level)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Maps use 0.5 * (1 - cos) as InCTRL does, so every map and score stays in [0, 1].
PATCH_RESIDUAL_SCALE = 0.5


def image_residual(adapter: nn.Module, embedding: torch.Tensor, prompt_embeddings: torch.Tensor) -> torch.Tensor:
    """Eq 1-2: F_x = psi(f_v(x)) - mean_k psi(f_v(x'_k)).

    embedding (B, E); prompt_embeddings (B or 1, K, E). Embeddings are L2-normalised first so that one
    adapter serves backbones whose embedding norms differ by orders of magnitude.
    """
    return query_adapted(adapter, embedding) - prompt_prototype(adapter, prompt_embeddings)


def query_adapted(adapter: nn.Module, embedding: torch.Tensor) -> torch.Tensor:
    """psi(f_v(x)) of normalised query embeddings (B, E) -> (B, E)."""
    return adapter(F.normalize(embedding, dim=-1))


def prompt_prototype(adapter: nn.Module, prompt_embeddings: torch.Tensor) -> torch.Tensor:
    """I_p = mean_k psi(f_v(x'_k)): (B or 1, K, E) -> (B or 1, E). Query-independent: a served bank's is kept."""
    return adapter(F.normalize(prompt_embeddings, dim=-1)).mean(dim=1)


def patch_residual(max_cosine: torch.Tensor) -> torch.Tensor:
    """Eq 3-4: (B, L, N) nearest-prompt cosine -> M_x (B, N), averaged over layers."""
    return (PATCH_RESIDUAL_SCALE * (1.0 - max_cosine)).mean(dim=1).clamp(0.0, 1.0)
