"""Eq 10-16: focal and dice losses, and the DASL / OASL objectives built from them."""
from __future__ import annotations

import torch

from .fusion import dasl_map, fused_score, oasl_map, upsample
from .heads import HeadOutputs

EPS = 1e-6


def binary_focal_loss(probs: torch.Tensor, target: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Mean focal loss of probabilities of the positive class against {0, 1} targets (any shape)."""
    p_t = torch.where(target > 0.5, probs, 1 - probs).clamp(EPS, 1.0)
    return (-((1 - p_t) ** gamma) * p_t.log()).mean()


def dice_loss(probs: torch.Tensor, mask: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Per-image soft dice (B, H, W), averaged; the smoothing term makes all-normal masks push maps to 0."""
    inter = (probs * mask).flatten(1).sum(-1)
    total = probs.flatten(1).sum(-1) + mask.flatten(1).sum(-1)
    return (1 - (2 * inter + smooth) / (total + smooth)).mean()


def pixel_loss(abnormal: torch.Tensor, fused: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Eq 12 / 15: focal([Phi(S_n), Phi(S_a)], G) + dice(Phi(S_a), G) + dice(Phi(M), G).

    S_n = 1 - S_a (a two-way softmax, averaged over layers, upsampled linearly), so the two-class focal
    term is the binary focal loss of Phi(S_a).
    """
    return binary_focal_loss(abnormal, mask) + dice_loss(abnormal, mask) + dice_loss(fused, mask)


def dasl_loss(
    outputs: HeadOutputs, labels: torch.Tensor, masks: torch.Tensor, grid: tuple[int, int], alpha: float
) -> torch.Tensor:
    """Eq 13: L_DASL = L_P + L_I on labelled images with masks (B, S, S)."""
    size = masks.shape[-1]
    image = binary_focal_loss(fused_score(outputs, alpha), labels) + binary_focal_loss(outputs.image_score, labels)
    pixel = pixel_loss(upsample(outputs.dasl_abnormal, grid, size), upsample(dasl_map(outputs), grid, size), masks)
    return image + pixel


def oasl_loss(outputs: HeadOutputs, grid: tuple[int, int], size: int) -> torch.Tensor:
    """Eq 14-16: the pixel losses of the OASL maps on normal images only, G = 0."""
    abnormal = upsample(outputs.oasl_abnormal, grid, size)
    return pixel_loss(abnormal, upsample(oasl_map(outputs), grid, size), torch.zeros_like(abnormal))
