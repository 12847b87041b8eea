"""Nuisance views of the references: the same normal product under another exposure and position.

K references understate how much normal images of a product vary: four washers photographed under
nearly the same exposure say nothing about the next frame's exposure, and a threshold from their K
leave-one-out scores alone lets through several times its target false-positive rate (model/calibration.py
has the measurements). A view of reference x is

    x' = clamp(g * x(A^-1 p), 0, 1),   g ~ U(1 - gain, 1 + gain),
    A = rotation by phi ~ U(-rotation, rotation) degrees, then translation t ~ U(-shift, shift)^2 (of the side),

sampled with reflection at the border, so no black margin appears that no camera frame has. Views are
normal evidence for the IMAGE threshold only: their reflected borders are no real image region, so the
pixel threshold stays with the references' own maps. Only the normal variation every production line has
(exposure drift, a part a few pixels off its mark) is simulated; rotation is off by default because for an
oriented texture (a woven fabric) a rotated view is a defect, not a normal image.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field


class NuisanceViews(BaseModel):
    """How many views calibration adds, and how far each may move from its reference."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    count: int = Field(32, ge=0, description="Views in all, dealt to the references in turn (0: none).")
    gain: float = Field(0.15, ge=0.0, lt=1.0, description="Largest relative exposure change.")
    shift: float = Field(0.05, ge=0.0, le=0.25, description="Largest translation, as a fraction of the image side.")
    rotation: float = Field(0.0, ge=0.0, le=45.0, description="Largest rotation in degrees.")
    seed: int = Field(0, description="Seed of the views' draws: the same references always give the same views.")

    def owners(self, shots: int) -> list[int]:
        """The reference each view is made from: view j of ``shots`` references is of reference j mod shots."""
        return [j % shots for j in range(self.count)] if shots else []


def nuisance_views(images: torch.Tensor, config: NuisanceViews, generator: torch.Generator) -> torch.Tensor:
    """(V, C, H, W) images in [0, 1] -> one view of each, (V, C, H, W), drawn from ``generator``."""
    n = len(images)

    def uniform(half_width: float, *shape: int) -> torch.Tensor:
        return (torch.rand(n, *shape, generator=generator, dtype=torch.float32) * 2 - 1) * half_width

    gain = 1.0 + uniform(config.gain)
    angle = uniform(config.rotation * math.pi / 180.0)
    shift = uniform(2.0 * config.shift, 2)  # affine_grid's coordinates span [-1, 1]: the side is 2 long
    cos, sin = angle.cos(), angle.sin()
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta.to(images), list(images.shape), align_corners=False)
    moved = F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    return (moved * gain.to(images)[:, None, None, None]).clamp(0.0, 1.0)
