"""Result images: 16-bit PNG anomaly maps and JPEG heat-map overlays (incoming frames: image_decoding).

Only numpy and PIL, so the CLI can reuse it without the streaming stack.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from services.imaging.decoding import ImageDecodeError

_SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N"}
_MAP_LEVELS = 65535
# zlib level 1: a map whose low bits are noise hardly compresses better at 6 (measured 88 vs 91 kB at
# 256 x 256) and costs 3.5x the CPU (18 vs 5 ms), on the consumer that writes every frame.
_PNG_COMPRESS_LEVEL = 1


def validate_anomaly_map(anomaly_map: np.ndarray) -> np.ndarray:
    """The map as float32 (H, W); ValueError unless it is non-empty, 2-D, finite and within [0, 1]."""
    values = np.asarray(anomaly_map)
    if values.ndim != 2 or 0 in values.shape:
        raise ValueError(f"anomaly map must be a non-empty (H, W) array, got shape {values.shape}")
    if not np.all(np.isfinite(values)):
        raise ValueError("anomaly map contains NaN or infinite values")
    low, high = float(values.min()), float(values.max())
    if low < 0.0 or high > 1.0:
        raise ValueError(f"anomaly map values must lie in [0, 1], got [{low}, {high}]")
    return values.astype(np.float32, copy=False)


def quantise_map(anomaly_map: np.ndarray) -> np.ndarray:
    """An (H, W) map in [0, 1] as uint16 levels (error <= 1/131070): what map.png stores."""
    values = validate_anomaly_map(anomaly_map)
    return np.round(values.astype(np.float64) * _MAP_LEVELS).astype(np.uint16)


def dequantise_map(levels: np.ndarray) -> np.ndarray:
    """Inverse of quantise_map: float32 (H, W) in [0, 1]."""
    return np.asarray(levels, dtype=np.float32) / _MAP_LEVELS


def encode_map_png(anomaly_map: np.ndarray) -> bytes:
    """Quantise an (H, W) map in [0, 1] to 16 bits (quantise_map) and encode it losslessly as PNG."""
    return encode_levels_png(quantise_map(anomaly_map))


def encode_levels_png(levels: np.ndarray) -> bytes:
    """An (H, W) uint16 map already quantised (quantise_map) as a lossless 16-bit PNG."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(levels, dtype=np.uint16)).save(buffer, format="PNG", compress_level=_PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def decode_map_png(data: bytes) -> np.ndarray:
    """Inverse of encode_map_png: float32 (H, W) in [0, 1]."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except Exception as error:
        raise ImageDecodeError(f"anomaly map PNG is corrupt: {error}") from error
    if image.mode not in _SIXTEEN_BIT_MODES and image.mode != "I":
        raise ImageDecodeError(f"anomaly map PNG must be 16-bit greyscale, got mode {image.mode!r}")
    return dequantise_map(np.asarray(image))


def jet_colormap(values: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] to uint8 RGB with a jet-like ramp: blue -> cyan -> green -> yellow -> red."""
    v = np.clip(np.asarray(values, dtype=np.float32), 0.0, 1.0)
    # Each channel is a clipped triangle peaking at 0.75 (red), 0.5 (green), 0.25 (blue).
    red = np.clip(1.5 - np.abs(4.0 * v - 3.0), 0.0, 1.0)
    green = np.clip(1.5 - np.abs(4.0 * v - 2.0), 0.0, 1.0)
    blue = np.clip(1.5 - np.abs(4.0 * v - 1.0), 0.0, 1.0)
    return np.round(np.stack([red, green, blue], axis=-1) * 255.0).astype(np.uint8)


_JET_PALETTE = jet_colormap(np.arange(256, dtype=np.float32) / 255.0).ravel().tolist()  # 256 RGB entries


def resize_map(anomaly_map: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of an (h, w) float map to (height, width)."""
    values = validate_anomaly_map(anomaly_map)
    if values.shape == (height, width):
        return values
    resized = Image.fromarray(values).resize((width, height), Image.Resampling.BILINEAR)
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)


def region_outline(mask: np.ndarray, thickness: int = 1) -> np.ndarray:
    """The boundary of a boolean (H, W) region mask: region pixels with a 4-neighbour outside it, grown
    inward-and-outward to `thickness` pixels."""
    region = np.asarray(mask, dtype=bool)
    padded = np.pad(region, 1, mode="constant", constant_values=False)
    interior = padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    outline = region & ~interior
    for _ in range(thickness - 1):
        grown = np.pad(outline, 1, mode="constant", constant_values=False)
        outline = outline | grown[:-2, 1:-1] | grown[2:, 1:-1] | grown[1:-1, :-2] | grown[1:-1, 2:]
    return outline


def render_overlay_jpeg(
    image: np.ndarray,
    anomaly_map: np.ndarray,
    opacity: float = 0.5,
    quality: int = 85,
    value_range: tuple[float, float] = (0.0, 1.0),
    outline_threshold: float | None = None,
) -> bytes:
    """Blend the jet-coloured map (resized to the image) over a (3, H, W) float image in [0, 1]; JPEG bytes.

    The colour scale spans `value_range` (the domain's calibrated display range: low is blue, high red);
    with `outline_threshold`, the boundary of the region at or above it is drawn in white on top. A map
    already at the image's size is used as it is (the result writer validated it); others are resized.
    """
    pixels = np.asarray(image, dtype=np.float32)
    if pixels.ndim != 3 or pixels.shape[0] != 3:
        raise ValueError(f"image must be a (3, H, W) array, got shape {pixels.shape}")
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must lie in [0, 1], got {opacity}")
    low, high = value_range
    if not 0.0 <= low < high:
        raise ValueError(f"value range must satisfy 0 <= low < high, got {value_range}")
    _, height, width = pixels.shape
    values = anomaly_map if anomaly_map.shape == (height, width) else resize_map(anomaly_map, height, width)
    # The consumer draws one overlay per frame: the colour scale through a 256-entry palette and the blend
    # in PIL's C code, on 8-bit images.
    levels = np.clip((values - low) * (255.0 / (high - low)) + 0.5, 0.0, 255.0).astype(np.uint8)
    heat = Image.fromarray(levels, mode="L")
    heat.putpalette(_JET_PALETTE)
    base = Image.fromarray(np.ascontiguousarray((np.clip(pixels, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8).transpose(1, 2, 0)))
    blended = Image.blend(base, heat.convert("RGB"), opacity)
    if outline_threshold is not None:
        outline = region_outline(values >= outline_threshold, max(1, round(min(height, width) / 160)))
        blended.paste((255, 255, 255), mask=Image.fromarray(outline.astype(np.uint8) * 255, mode="L"))
    buffer = io.BytesIO()
    blended.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()
