"""Nuisance views of the references: the same normal product under another exposure, lighting and position.

K references understate how much normal images of a product vary: four washers photographed under
nearly the same exposure say nothing about the next frame's exposure. Views of the references are extra
normal evidence, made without any extra image. A view of reference x is

    x'(p) = clamp(g * (1 + b <d, p>) * x(p - t), 0, 1),   g ~ U(1 - gain, 1 + gain),   t ~ U(-shift, shift)^2,

with p in [-1, 1]^2 across the image, t a fraction of the side, d a random unit direction and
b ~ U(-gradient, gradient) (0 by default; calibration's views use 8%: model/calibration.py),

sampled with reflection at the border, so no black margin appears that no camera frame has. Only the
normal variation every production line has is simulated: exposure drift, light falling unevenly across
the field, and a part a few pixels off its mark. Two uses, each measured (model/calibration.py, model/standardisation.py):
- the image threshold (shift, exposure and gradient): the views' leave-one-out scores join the references';
- the standardisation of the global distance g and the appearance distance a (exposure only): a translated texture's reflected border
  is a seam no fabric has, which moved g as much as a real global defect did on the textiles.
Rotation is not simulated: for an oriented texture (a woven fabric) a rotated view is a defect.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field


class NuisanceViews(BaseModel):
    """How many views calibration adds, and how far each may move from its reference."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    count: int = Field(32, ge=0, description="Views in all, dealt to the references in turn (0: none).")
    gain: float = Field(0.15, ge=0.0, lt=1.0, description="Largest relative exposure change.")
    shift: float = Field(0.02, ge=0.0, le=0.25, description="Largest translation, as a fraction of the image side.")
    gradient: float = Field(0.0, ge=0.0, lt=1.0, description="Largest relative illumination change from the centre to an edge, along a random direction.")
    seed: int = Field(0, description="Seed of the views' draws: the same references always give the same views.")

    def owners(self, shots: int) -> list[int]:
        """The reference each view is made from: view j of ``shots`` references is of reference j mod shots."""
        return [j % shots for j in range(self.count)] if shots else []


def views_per_reference(references: Sequence[torch.Tensor], config: NuisanceViews) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """For each of K (1, C, H, W) references with views: (k, the views' indices j (n,), the views (n, C, H, W)).
    Drawn in reference order from one generator seeded by ``config.seed``: the same references, the same views."""
    owners = torch.tensor(config.owners(len(references)), dtype=torch.long)
    generator = torch.Generator().manual_seed(config.seed)
    for k, reference in enumerate(references):
        mine = (owners == k).nonzero().flatten()
        if len(mine):
            yield k, mine, nuisance_views(reference.expand(len(mine), -1, -1, -1), config, generator)


def nuisance_views(images: torch.Tensor, config: NuisanceViews, generator: torch.Generator) -> torch.Tensor:
    """(V, C, H, W) images in [0, 1] -> one view of each, (V, C, H, W), drawn from ``generator``."""
    n = len(images)

    def uniform(half_width: float, *shape: int) -> torch.Tensor:
        return (torch.rand(n, *shape, generator=generator, dtype=torch.float32) * 2 - 1) * half_width

    gain = 1.0 + uniform(config.gain)
    shift = uniform(2.0 * config.shift, 2)  # affine_grid's coordinates span [-1, 1]: the side is 2 long
    lighting = gain[:, None, None] * illumination_ramp(n, images.shape[-2:], config.gradient, uniform)  # (V, H, W)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta.to(images), list(images.shape), align_corners=False)
    moved = F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    return (moved * lighting.to(images)[:, None]).clamp(0.0, 1.0)


def illumination_ramp(
    n: int, size: tuple[int, int], gradient: float, uniform: Callable[..., torch.Tensor]
) -> torch.Tensor:
    """(n, H, W) factors 1 + b (cos(a) u + sin(a) v), u and v in [-1, 1] across the image, b ~ U(-gradient,
    gradient), a ~ U(-pi, pi): a lamp off to one side. All ones, with nothing drawn, when gradient is 0, so
    views without a gradient are those drawn before it existed."""
    if gradient == 0.0:
        return torch.ones(n, *size)
    slope, angle = uniform(gradient), uniform(torch.pi)
    rows = torch.linspace(-1.0, 1.0, size[0])[None, :, None]
    columns = torch.linspace(-1.0, 1.0, size[1])[None, None, :]
    return 1.0 + slope[:, None, None] * (torch.cos(angle)[:, None, None] * columns + torch.sin(angle)[:, None, None] * rows)
