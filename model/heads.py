"""Trainable heads on the frozen backbone: psi, eta (image residual), phi_1 (DASL), phi_2 (OASL)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .residuals import patch_residual, prompt_prototype, query_adapted


class ResidualAdapter(nn.Sequential):
    """psi: E -> E/r -> E, ReLU after each, no bias (InCTRL's adapter)."""

    def __init__(self, embed_dim: int, reduction: int):
        hidden = max(1, embed_dim // reduction)
        super().__init__(
            nn.Linear(embed_dim, hidden, bias=False),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, embed_dim, bias=False),
            nn.ReLU(inplace=True),
        )


class ResidualScorer(nn.Sequential):
    """eta: E -> 128 -> 64 -> 1 with BatchNorm (eval mode makes it batch independent)."""

    def __init__(self, embed_dim: int):
        super().__init__(
            nn.Linear(embed_dim, 128),
            nn.BatchNorm1d(128),
            nn.ReLU(inplace=True),
            nn.Linear(128, 64),
            nn.BatchNorm1d(64),
            nn.ReLU(inplace=True),
            nn.Linear(64, 1),
        )


class PatchAdapter(nn.Module):
    """phi: per layer LayerNorm + Linear, raw patch width W -> text embedding dim E."""

    def __init__(self, num_layers: int, patch_dim: int, embed_dim: int):
        super().__init__()
        self.norms = nn.ModuleList(nn.LayerNorm(patch_dim) for _ in range(num_layers))
        self.projections = nn.ModuleList(nn.Linear(patch_dim, embed_dim) for _ in range(num_layers))

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """(B, L, N, W) -> (B, L, N, E)."""
        return torch.stack(
            [proj(norm(patches[:, i])) for i, (norm, proj) in enumerate(zip(self.norms, self.projections))],
            dim=1,
        )

    def cosine_to(self, patches: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """cos(phi_l(F^l), t_c): patches (B, L, N, W), unit text rows (B, C, E) -> (B, L, N, C).

        Narrow features (W < E, e.g. EfficientNet) never materialise the projection y = A x + b:
        y.t = x.(A^T t) + b.t and |y|^2 = x^T (A^T A) x + 2 (A^T b).x + |b|^2, so a token costs W^2, not W E.
        """
        cosines = []
        for i, (norm, proj) in enumerate(zip(self.norms, self.projections)):
            x = norm(patches[:, i])  # (B, N, W)
            weight, bias = proj.weight, proj.bias  # (E, W), (E,)
            if x.shape[-1] < weight.shape[0]:
                dots = torch.einsum("bnw,bcw->bnc", x, text @ weight) + (text @ bias)[:, None, :]
                squared = ((x @ (weight.T @ weight)) * x).sum(-1) + 2 * x @ (weight.T @ bias) + bias @ bias
                cosines.append(dots / squared.clamp_min(1e-24).sqrt()[..., None])
            else:  # cos = y.t / |y|: the (B, N, E) projection is never divided, only its (B, N, C) dots
                y = proj(x)
                norms = torch.linalg.vector_norm(y, dim=-1, keepdim=True).clamp_min(1e-12)  # F.normalize's eps
                cosines.append((y @ text.transpose(1, 2)) / norms)
        return torch.stack(cosines, dim=1)


def text_softmax_maps(
    adapter: PatchAdapter, patches: torch.Tensor, text: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq 7-8: per-patch softmax over {normal, abnormal}, averaged over layers -> S_n, S_a, each (B, N).

    text (B or 1, 2, E): rows F_n, F_a, L2-normalised.
    """
    logits = adapter.cosine_to(patches, text.expand(patches.shape[0], -1, -1)) / temperature  # (B, L, N, 2)
    probs = logits.softmax(dim=-1).mean(dim=1)  # (B, N, 2)
    return probs[..., 0], probs[..., 1]


def text_score(embedding: torch.Tensor, text: torch.Tensor, logit_scale: float) -> torch.Tensor:
    """Eq 6: s_q (B,) = softmax_c(logit_scale * cos(f_v(x), F_c))[abnormal]."""
    cos = torch.einsum("be,bce->bc", F.normalize(embedding, dim=-1), text.expand(embedding.shape[0], -1, -1))
    return (logit_scale * cos).softmax(dim=-1)[:, 1]


@dataclass
class HeadOutputs:
    """Every patch-level quantity the losses and the fusion need; maps are (B, N)."""

    image_score: torch.Tensor  # s_i (B,)
    text_score: torch.Tensor | None  # s_q (B,), None on image-only backbones
    patch_residual: torch.Tensor  # M_x
    dasl_normal: torch.Tensor  # S_n
    dasl_abnormal: torch.Tensor  # S_a
    oasl_normal: torch.Tensor  # S^_n
    oasl_abnormal: torch.Tensor  # S^_a


class InCTRLv2Heads(nn.Module):
    """The trainable part of InCTRLv2. DASL and OASL adapters are separate modules so that neither loss
    reaches the other's parameters."""

    def __init__(self, embed_dim: int, patch_dim: int, num_layers: int, reduction: int):
        super().__init__()
        self.psi = ResidualAdapter(embed_dim, reduction)
        self.eta = ResidualScorer(embed_dim)
        self.dasl = PatchAdapter(num_layers, patch_dim, embed_dim)
        self.oasl = PatchAdapter(num_layers, patch_dim, embed_dim)

    def forward(
        self,
        embedding: torch.Tensor,  # (B, E)
        patches: torch.Tensor,  # (B, L, N, W)
        max_cosine: torch.Tensor,  # (B, L, N) from the nearest-patch search
        prompt_embeddings: torch.Tensor,  # (B or 1, K, E)
        text: torch.Tensor,  # (B or 1, 2, E)
        logit_scale: float | None,  # None: image-only backbone, no s_q
        temperature: float,
        prototype: torch.Tensor | None = None,  # (B or 1, E) prompt_prototype(psi, prompt_embeddings), if known
    ) -> HeadOutputs:
        if prototype is None:
            prototype = prompt_prototype(self.psi, prompt_embeddings)
        residual = query_adapted(self.psi, embedding) - prototype  # Eq 1-2
        dasl_n, dasl_a = text_softmax_maps(self.dasl, patches, text, temperature)
        oasl_n, oasl_a = text_softmax_maps(self.oasl, patches, text, temperature)
        return HeadOutputs(
            image_score=torch.sigmoid(self.eta(residual)).squeeze(-1),
            text_score=None if logit_scale is None else text_score(embedding, text, logit_scale),
            patch_residual=patch_residual(max_cosine),
            dasl_normal=dasl_n,
            dasl_abnormal=dasl_a,
            oasl_normal=oasl_n,
            oasl_abnormal=oasl_a,
        )
