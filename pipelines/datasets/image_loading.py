"""Decoding a Sample's image and mask into tensors."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from pipelines.datasets.sample import NORMAL, Sample

Size = int | tuple[int, int]


def _hw(size: Size) -> tuple[int, int]:
    height, width = (size, size) if isinstance(size, int) else size
    if height <= 0 or width <= 0:
        raise ValueError(f"size must be positive, got {size!r}")
    return height, width


def _rgb_unit(image: Image.Image) -> np.ndarray:
    """HxWx3 float32 in [0, 1] for 8-bit, 16-bit and float images."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        pixels = np.asarray(image, dtype=np.float32)
        scale = 65535.0 if image.mode.startswith("I;16") or pixels.max(initial=0) > 255 else 255.0
        grey = np.clip(pixels / scale, 0.0, 1.0)
        return np.repeat(grey[:, :, None], 3, axis=2)
    return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0


def load_image(sample: Sample, size: Size | None = None) -> torch.Tensor:
    """The image as a float32 tensor (3, H, W) in [0, 1]; resized (bicubic) to `size` when given."""
    with Image.open(sample.image) as image:
        pixels = _rgb_unit(image)
    tensor = torch.from_numpy(pixels).permute(2, 0, 1).contiguous()
    if size is None or tuple(tensor.shape[1:]) == _hw(size):
        return tensor
    resized = torch.nn.functional.interpolate(
        tensor[None], size=_hw(size), mode="bicubic", align_corners=False, antialias=True
    )
    return resized[0].clamp_(0.0, 1.0)


def load_mask(sample: Sample, size: Size | None = None) -> torch.Tensor:
    """The mask as a uint8 tensor (H, W) with values {0, 1} (non-zero annotation pixels are 1).

    Normal samples without a mask give all zeros at `size` (or the image's own size). An anomalous sample
    without a pixel annotation raises: an all-zero mask would silently corrupt pixel metrics.
    """
    if sample.mask is None:
        if sample.label != NORMAL:
            raise ValueError(f"anomalous sample {sample.image} ({sample.category}) has no pixel mask")
        if size is None:
            with Image.open(sample.image) as image:
                return torch.zeros((image.height, image.width), dtype=torch.uint8)
        return torch.zeros(_hw(size), dtype=torch.uint8)
    with Image.open(sample.mask) as image:
        binary = Image.fromarray((np.asarray(image.convert("L")) > 0).astype(np.uint8))
    if size is not None:
        height, width = _hw(size)
        binary = binary.resize((width, height), Image.Resampling.NEAREST)
    return torch.from_numpy(np.asarray(binary, dtype=np.uint8).copy())
