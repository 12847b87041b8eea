"""Eq 9, 11, 14-17: fuse the head outputs into the image score s(x) and the pixel map M'(x).

Image score, two variants behind one interface (`ImageFusion`, built by `create_image_fusion`):
- paper: Eq 9 on the raw components.
- standardised (a departure from the paper, the default on image-only backbones): every component c
  (s_i, s_q, max M_x, the global distance g, the appearance distance a; model/standardisation.py) is
  z-scored against its leave-one-out values on the domain's own K references, then
      s(x) = sigmoid( sum_c w_c e_c(x) / (T * sum_c w_c) ),
  e_Mx = z_Mx, and for every other component e_c = z_c (``gate`` None, the default: two-sided) or
  e_c = max(z_c - tau, 0) (``gate`` tau), so a component counts by how unusual it is FOR THIS PRODUCT, not by
  its raw scale. With K = 1 there is nothing to standardise against and s(x) = max M_x, the training-free
  patch score. With tau = 0 (one-sided) an extra adds evidence only above its normal mean and never pulls a
  frame below its patch score, so where it is noise (g on local specks) only its upper half reaches the score;
  with tau > 0, where the extras stay within tau normal spreads s(x) ranks the images exactly as max M_x does.
"""
from __future__ import annotations

from typing import Collection, Mapping, Protocol

import torch
import torch.nn.functional as F

from .config import FusionConfig
from .heads import HeadOutputs
from .standardisation import IMAGE, PATCH, TEXT, standardise


def fused_score(outputs: HeadOutputs, alpha: float) -> torch.Tensor:
    """Eq 9: s = (1 - alpha) * (s_i + s_q) / 2 + alpha * max(M_x); without text, s_q drops out."""
    holistic = outputs.image_score
    if outputs.text_score is not None:
        holistic = (outputs.image_score + outputs.text_score) / 2
    return (1 - alpha) * holistic + alpha * outputs.patch_residual.amax(dim=-1)


class ImageFusion(Protocol):
    components: frozenset[str]  # the components it reads (model/standardisation.py names)

    def __call__(self, components: Mapping[str, torch.Tensor], references: Mapping[str, torch.Tensor] | None) -> torch.Tensor:
        """components: name -> (B,) per query; references: name -> (H,) LOO values, None when K = 1 -> (B,) in [0, 1]."""

    def logit_per_patch_spread(self, present: Collection[str]) -> float | None:
        """How far logit(s) moves when max M_x moves by one of its LOO spreads (the other components fixed), with
        the components ``present``; None where s is not a logistic of z-scores."""


class PaperFusion:
    """Eq 9 with alpha; the components' raw scales, no references needed."""

    needs_references = False
    components = frozenset({IMAGE, TEXT, PATCH})

    def __init__(self, alpha: float):
        self.alpha = alpha

    def __call__(self, components: Mapping[str, torch.Tensor], references: Mapping[str, torch.Tensor] | None) -> torch.Tensor:
        holistic = components["image"]
        if "text" in components:
            holistic = (components["image"] + components["text"]) / 2
        return (1 - self.alpha) * holistic + self.alpha * components[PATCH]

    def logit_per_patch_spread(self, present: Collection[str]) -> float | None:
        return None


class StandardisedFusion:
    """Weighted mean of LOO z-scores, mapped to [0, 1] by a logistic; max M_x alone when K = 1."""

    needs_references = True

    def __init__(self, weights: Mapping[str, float], floor: float, temperature: float, gate: float | None = None):
        self.weights = {name: w for name, w in weights.items() if w > 0}
        self.components = frozenset({*self.weights, PATCH})  # max M_x alone when K = 1
        self.floor = floor
        self.temperature = temperature
        self.gate = gate

    def _evidence(self, name: str, z: torch.Tensor) -> torch.Tensor:
        """z_c, or only its excess over the gate for components other than max M_x."""
        if self.gate is None or name == PATCH:
            return z
        return (z - self.gate).clamp_min(0.0)

    def __call__(self, components: Mapping[str, torch.Tensor], references: Mapping[str, torch.Tensor] | None) -> torch.Tensor:
        if references is None:
            return components[PATCH]
        used = self._used(components)
        if not used:
            raise ValueError(f"standardised fusion: none of the weighted components {sorted(self.weights)} is available")
        fused = sum(w * self._evidence(name, standardise(components[name], references[name], self.floor)) for name, w in used.items())
        return torch.sigmoid(fused / (self.temperature * sum(used.values())))

    def logit_per_patch_spread(self, present: Collection[str]) -> float | None:
        """w_Mx / (T * sum_c w_c): the fused logit is sum_c w_c z_c / (T * sum_c w_c)."""
        used = self._used(present)
        return used.get(PATCH, 0.0) / (self.temperature * sum(used.values())) if used else None

    def _used(self, present: Collection[str]) -> dict[str, float]:
        """The weighted components among those ``present``."""
        return {name: w for name, w in self.weights.items() if name in present}


def create_image_fusion(config: FusionConfig, alpha: float, has_text: bool) -> PaperFusion | StandardisedFusion:
    kind = config.image if config.image != "auto" else ("paper" if has_text else "standardised")
    if kind == "paper":
        return PaperFusion(alpha)
    return StandardisedFusion(config.weights, config.floor, config.temperature, config.gate)


def map_fusion_kind(config: FusionConfig, has_text: bool) -> str:
    """"paper" (Eq 17) or "patch" (Phi(M_x)); "auto" is the paper with a text tower."""
    return config.maps if config.maps != "auto" else ("paper" if has_text else "patch")


def upsample(patch_map: torch.Tensor, grid: tuple[int, int], size: int) -> torch.Tensor:
    """Phi: (B, N) patch map -> (B, size, size), bilinear."""
    grid_map = patch_map.reshape(-1, 1, *grid)
    return F.interpolate(grid_map, size=(size, size), mode="bilinear", align_corners=False)[:, 0]


def dasl_map(outputs: HeadOutputs) -> torch.Tensor:
    """Eq 11: M_p = (M_x + S_a) / 2, (B, N)."""
    return (outputs.patch_residual + outputs.dasl_abnormal) / 2


def oasl_map(outputs: HeadOutputs) -> torch.Tensor:
    """Eq 16: M_n = (M_x + S^_a) / 2, (B, N)."""
    return (outputs.patch_residual + outputs.oasl_abnormal) / 2


def fused_map(outputs: HeadOutputs, grid: tuple[int, int], size: int, beta: float) -> torch.Tensor:
    """Eq 17 before the blur: M' = (1 - beta) Phi(M_p) + beta Phi(M_n), (B, size, size)."""
    # Phi is linear, so blending on the patch grid and upsampling once is the same map.
    return upsample((1 - beta) * dasl_map(outputs) + beta * oasl_map(outputs), grid, size)


def gaussian_kernel(sigma: float) -> torch.Tensor:
    """1-D kernel truncated at 4 sigma, as scipy.ndimage.gaussian_filter does."""
    radius = int(4 * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    return kernel / kernel.sum()


def gaussian_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """(B, H, W) separable blur; reflect padding, or replicate where the map is narrower than the radius."""
    kernel = gaussian_kernel(sigma).to(maps)
    radius = kernel.numel() // 2
    x = maps[:, None]
    mode = "reflect" if radius < min(x.shape[-2:]) else "replicate"
    x = F.pad(x, (radius, radius, radius, radius), mode=mode)
    x = F.conv2d(x, kernel.view(1, 1, 1, -1))
    x = F.conv2d(x, kernel.view(1, 1, -1, 1))
    return x[:, 0]
