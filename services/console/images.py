"""Image encodings the console serves or stores: original frames as PNG, coloured maps, defect masks."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

from services.results.encoding import decode_map_png, jet_colormap, region_outline


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def encode_image_png(image: np.ndarray) -> bytes:
    """(3, H, W) float in [0, 1] -> 8-bit RGB PNG."""
    pixels = np.round(np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0).transpose(1, 2, 0) * 255.0)
    return _png(pixels.astype(np.uint8))


def colour_map_png(
    map_png: bytes, value_range: tuple[float, float] = (0.0, 1.0), outline_threshold: float | None = None
) -> bytes:
    """A stored 16-bit map PNG as the overlay draws it: jet over `value_range` (the frame's display range,
    blue at low, red at high), the region at or above `outline_threshold` outlined in white."""
    low, high = value_range
    if not 0.0 <= low < high:
        raise ValueError(f"value range must satisfy 0 <= low < high, got {value_range}")
    values = decode_map_png(map_png)
    pixels = jet_colormap((values - low) / (high - low))
    if outline_threshold is not None:
        pixels[region_outline(values >= outline_threshold, max(1, round(min(values.shape) / 160)))] = 255
    return _png(pixels)


def defect_mask_png(map_png: bytes, map_threshold: float, size: tuple[int, int]) -> bytes:
    """The 16-bit map PNG thresholded at `map_threshold` as an 8-bit {0, 255} PNG of `size` (H, W)."""
    mask = (decode_map_png(map_png) >= map_threshold).astype(np.uint8) * 255
    image = Image.fromarray(mask)
    if mask.shape != tuple(size):  # the consumer restores maps to the frame's geometry; resample only if not
        image = image.resize((size[1], size[0]), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
