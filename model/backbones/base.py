"""The one interface every backbone offers the detector."""
from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import nn


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights were asked for and cannot be had; never fall back to random weights silently."""


class Backbone(nn.Module, ABC):
    """Frozen image encoder returning a global embedding and patch tokens of selected layers.

    Subclasses set the attributes below in ``__init__``; inputs to ``forward`` are already resized to
    ``image_size`` and normalised with ``mean``/``std``.
    """

    name: str
    image_size: int
    grid: tuple[int, int]  # patch grid (h, w); N = h * w
    embed_dim: int  # E
    patch_dim: int  # W
    layers: tuple[int, ...]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    logit_scale: float  # Eq 6 temperature; only meaningful with a text tower

    @property
    def has_text(self) -> bool:
        return False

    @property
    def num_patches(self) -> int:
        return self.grid[0] * self.grid[1]

    @abstractmethod
    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, S, S) normalised -> embedding (B, E), patch tokens (B, |L|, N, W)."""

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """Texts -> (T, E) embeddings. Only backbones with a text tower implement it."""
        raise NotImplementedError(f"backbone {self.name!r} has no text tower")

    def describe(self) -> dict[str, object]:
        """Shape facts a checkpoint records and checks on load."""
        return {
            "name": self.name,
            "image_size": self.image_size,
            "grid": list(self.grid),
            "embed_dim": self.embed_dim,
            "patch_dim": self.patch_dim,
            "layers": list(self.layers),
            "has_text": self.has_text,
        }


def default_layers(depth: int) -> tuple[int, ...]:
    """InCTRL's blocks 7, 9, 11 of 12 (counted from 1), scaled to other depths; 0-based."""
    return tuple(sorted({max(0, round(depth * k / 12) - 1) for k in (7, 9, 11)}))
