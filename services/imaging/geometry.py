"""Frames of different sizes -> one backbone batch.

The detector's own preprocessing resizes the shortest side and centre-crops to the backbone's input size.
Doing that geometry per frame first (in [0, 1], without normalisation) lets frames of any size share one
tensor, and the detector's preprocessing then only normalises: the pixels it sees are the same as if each
frame had been scored alone.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from model.preprocess import InvalidImageError, Preprocessor, validate_images

_IDENTITY = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
DEFAULT_MAX_ASPECT_RATIO = 64.0
"""Resizing the shortest side to `size` makes the long side size * aspect: at 64:1 and size 240 that is a
44 MB intermediate; a 500 x 70000 frame (140:1) at size 896 would need 2.4 GB, so such frames are refused."""


def to_backbone_geometry(
    image: np.ndarray | torch.Tensor, size: int, what: str = "image", max_aspect_ratio: float = DEFAULT_MAX_ASPECT_RATIO
) -> torch.Tensor:
    """One (C, H, W) or (H, W) image in [0, 1] -> (3, size, size) in [0, 1]; raises InvalidImageError naming `what`."""
    tensor = image if isinstance(image, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(image))
    if tensor.ndim == 2:
        tensor = tensor[None]
    if tensor.ndim != 3:
        raise InvalidImageError(f"{what} must have shape (C, H, W), got {tuple(tensor.shape)}")
    height, width = tensor.shape[-2:]
    if min(height, width) > 0 and max(height, width) / min(height, width) > max_aspect_ratio:
        raise InvalidImageError(
            f"{what} is {height}x{width}: aspect ratio {max(height, width) / min(height, width):.0f}:1 exceeds {max_aspect_ratio:g}:1"
        )
    batch = validate_images(tensor[None], what)
    return Preprocessor(size, *_IDENTITY)(batch.float())[0]


def stack_for_backbone(images: Sequence[np.ndarray | torch.Tensor], size: int, what: str = "images") -> torch.Tensor:
    """(3, H_i, W_i) images of any sizes -> one (B, 3, size, size) float batch in [0, 1]."""
    return torch.stack([to_backbone_geometry(image, size, f"{what}[{i}]") for i, image in enumerate(images)])
