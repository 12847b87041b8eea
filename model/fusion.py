"""Eq 9, 11, 14-17: fuse the head outputs into the image score s(x) and the pixel map M'(x)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .heads import HeadOutputs


def fused_score(outputs: HeadOutputs, alpha: float) -> torch.Tensor:
    """Eq 9: s = (1 - alpha) * (s_i + s_q) / 2 + alpha * max(M_x); without text, s_q drops out."""
    holistic = outputs.image_score
    if outputs.text_score is not None:
        holistic = (outputs.image_score + outputs.text_score) / 2
    return (1 - alpha) * holistic + alpha * outputs.patch_residual.amax(dim=-1)


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
