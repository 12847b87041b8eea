"""Input validation and OpenCLIP-style preprocessing (bicubic resize, centre crop, mean/std), and the
inverse geometry that brings maps back to the caller's resolution."""
from __future__ import annotations

import torch
import torch.nn.functional as F

RANGE_TOLERANCE = 1e-3


class InvalidImageError(ValueError):
    """An image batch the detector cannot score; the message says what is wrong with it."""


def validate_images(images: object, what: str = "images") -> torch.Tensor:
    """Check a (B, C, H, W) float batch in [0, 1] with C in {1, 3, 4}; return it unchanged."""
    if not isinstance(images, torch.Tensor):
        raise InvalidImageError(f"{what} must be a torch.Tensor, got {type(images).__name__}")
    if images.ndim != 4:
        raise InvalidImageError(f"{what} must have shape (B, C, H, W), got {tuple(images.shape)}")
    b, c, h, w = images.shape
    if b == 0:
        raise InvalidImageError(f"{what} is empty (batch size 0)")
    if h == 0 or w == 0:
        raise InvalidImageError(f"{what} has zero size {h}x{w}")
    if c not in (1, 3, 4):
        raise InvalidImageError(f"{what} must have 1 (gray), 3 (RGB) or 4 (RGBA) channels, got {c}")
    if not images.is_floating_point():
        raise InvalidImageError(f"{what} must be a float tensor in [0, 1], got dtype {images.dtype}")
    if not torch.isfinite(images).all():
        raise InvalidImageError(f"{what} contains NaN or infinite values")
    lo, hi = float(images.min()), float(images.max())
    if lo < -RANGE_TOLERANCE or hi > 1 + RANGE_TOLERANCE:
        raise InvalidImageError(f"{what} must lie in [0, 1], got values in [{lo:.3g}, {hi:.3g}]")
    return images


def to_rgb(images: torch.Tensor) -> torch.Tensor:
    """Gray -> three equal channels; RGBA -> RGB (alpha dropped)."""
    if images.shape[1] == 1:
        return images.expand(-1, 3, -1, -1)
    return images[:, :3]


class Preprocessor:
    """Resize the shortest side to ``size`` (bicubic, antialiased), centre crop, normalise."""

    def __init__(self, size: int, mean: tuple[float, ...], std: tuple[float, ...]):
        self.size = size
        self.mean = torch.tensor(mean).view(1, 3, 1, 1)
        self.std = torch.tensor(std).view(1, 3, 1, 1)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) in [0, 1] -> (B, 3, size, size) normalised, on the images' device."""
        x = resize_and_crop(images, self.size)
        return (x - self.mean.to(x.device)) / self.std.to(x.device)


def resize_and_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """The geometry alone: (B, C, H, W) in [0, 1] -> (B, 3, size, size) float in [0, 1], shortest side to
    ``size`` (bicubic, antialiased), centre crop. Inverse: restore_geometry."""
    x = to_rgb(images).float()
    h, w = x.shape[-2:]
    if (h, w) != (size, size):
        scale = size / min(h, w)
        new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
        x = F.interpolate(x, size=(new_h, new_w), mode="bicubic", antialias=True, align_corners=False)
        top, left = (new_h - size) // 2, (new_w - size) // 2
        x = x[..., top : top + size, left : left + size].clamp(0.0, 1.0)
    return x


def restore_geometry(maps: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Invert resize + centre crop for (B, S, S) maps -> (B, height, width).

    The crop covers the central min(h, w) square of the original; the cropped-away margins take the
    nearest map value (replicate), as nothing was seen there.
    """
    if maps.shape[-2:] == (height, width):
        return maps
    side = min(height, width)
    x = F.interpolate(maps[:, None], size=(side, side), mode="bilinear", align_corners=False)
    top, left = (height - side) // 2, (width - side) // 2
    if (top, left) != (0, 0) or side != max(height, width):
        x = F.pad(x, (left, width - side - left, top, height - side - top), mode="replicate")
    return x[:, 0]
