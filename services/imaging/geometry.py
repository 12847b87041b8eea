"""A frame at the backbone's geometry, and its inverse for maps.

    prepare_frame:  (C, H, W) float in [0, 1]  ->  (3, S, S) float16 in [0, 1]   (consumer, ingress)
    restore_map:    (S, S) map                 ->  (H, W) float32 in [0, 1]      (result writer)

The detector's preprocessing resizes the shortest side to S (bicubic, antialiased) and centre-crops; done
per frame where the frame is decoded, frames of any size share one backbone batch and a replica receives
only the S x S pixels it needs, so its host does no resampling. float16 because the resampled pixels are
not multiples of 1/255: quantising them to uint8 moved a trained EfficientNet-Lite0 checkpoint's scores by
up to 3e-3 and its maps by 1.7e-3 (the service promises 1e-3), float16 by 2e-4 - at 6 bytes a pixel of the
S x S crop, against 12 bytes a pixel of the full frame as float32 before.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from model.preprocess import InvalidImageError, resize_and_crop, restore_geometry, validate_images

DEFAULT_MAX_ASPECT_RATIO = 64.0
"""Resizing the shortest side to `size` makes the long side size * aspect: at 64:1 and size 240 that is a
44 MB intermediate; a 500 x 70000 frame (140:1) at size 896 would need 2.4 GB, so such frames are refused."""
PIXEL_DTYPE = np.float16


def to_backbone_geometry(
    image: np.ndarray | torch.Tensor, size: int, what: str = "image", max_aspect_ratio: float = DEFAULT_MAX_ASPECT_RATIO
) -> torch.Tensor:
    """One (C, H, W) or (H, W) image in [0, 1] -> (3, size, size) float32 in [0, 1]; raises InvalidImageError naming `what`."""
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
    return resize_and_crop(batch, size)[0]


def prepare_frame(
    image: np.ndarray, size: int, what: str = "image", max_aspect_ratio: float = DEFAULT_MAX_ASPECT_RATIO
) -> np.ndarray:
    """What a replica is sent: (3, size, size) float16 pixels in [0, 1]; raises InvalidImageError naming `what`."""
    return to_backbone_geometry(image, size, what, max_aspect_ratio).numpy().astype(PIXEL_DTYPE)


def check_prepared(pixels: object, size: int, what: str = "frame") -> torch.Tensor:
    """Prepared pixels -> (3, size, size) float32 tensor; InvalidImageError unless they are what prepare_frame makes."""
    if not isinstance(pixels, np.ndarray) or pixels.dtype != PIXEL_DTYPE or pixels.shape != (3, size, size):
        shape = getattr(pixels, "shape", None)
        dtype = getattr(pixels, "dtype", type(pixels).__name__)
        raise InvalidImageError(f"{what} must be (3, {size}, {size}) {np.dtype(PIXEL_DTYPE)} pixels, got {shape} {dtype}")
    tensor = torch.from_numpy(pixels).float()
    return validate_images(tensor[None], what)[0]


def restore_map(anomaly_map: np.ndarray, height: int, width: int) -> np.ndarray:
    """Inverse of the geometry for a map: (S, S) at model resolution -> (height, width) float32 in [0, 1]."""
    values = torch.from_numpy(np.ascontiguousarray(anomaly_map, dtype=np.float32))
    if values.ndim != 2 or 0 in values.shape:
        raise ValueError(f"anomaly map must be a non-empty (H, W) array, got shape {tuple(values.shape)}")
    return restore_geometry(values[None], height, width)[0].numpy()


def stack_for_backbone(images: Sequence[np.ndarray | torch.Tensor], size: int, what: str = "images") -> torch.Tensor:
    """(3, H_i, W_i) images of any sizes -> one (B, 3, size, size) float batch in [0, 1]."""
    return torch.stack([to_backbone_geometry(image, size, f"{what}[{i}]") for i, image in enumerate(images)])
