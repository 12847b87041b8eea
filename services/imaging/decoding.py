"""Encoded image file bytes -> the float32 RGB array the detector scores, within size limits.

    decode_image(data) -> float32 (3, H, W) in [0, 1]

Every refusal is an ImageDecodeError (ImageTooLarge for a limit), raised from the header before any
pixel is decoded where the header tells. Decisions for odd files:
- EXIF orientation is applied, so the array is the image as the camera meant it (sides may swap).
- Multi-frame files (animated GIF/PNG, multi-page TIFF, MPO JPEGs whose second frame is a preview): the
  first frame is the image, later frames are never decoded.
- 16-bit and 32-bit integer greyscale are scaled by 1/65535 and clipped; float greyscale is clipped to
  [0, 1] with NaN read as 0; palette, LA, CMYK, YCbCr and the other PIL colour modes become RGB
  (transparency dropped); any other mode is refused.
- Zero-size, truncated and corrupt files are refused.

Only numpy and PIL, so the CLI can reuse it without the streaming stack.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps

# File suffixes read as images wherever folders or prefixes of images are listed.
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})
# Leading bytes of each format -> the suffix a stored copy of the file gets.
_SIGNATURES = ((b"\x89PNG\r\n\x1a\n", ".png"), (b"\xff\xd8\xff", ".jpg"), (b"BM", ".bmp"), (b"II*\x00", ".tif"),
               (b"MM\x00*", ".tif"), (b"GIF8", ".gif"))  # fmt: skip
# Bytes of one decoded pixel: three float32 channels.
DECODED_BYTES_PER_PIXEL = 12
_SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N"}
# Modes PIL can turn into RGB without guessing; anything else (e.g. multi-band scientific formats) is refused.
_CONVERTIBLE_MODES = {"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"}
_SIXTEEN_BIT_LEVELS = 65535.0


def image_suffix(data: bytes) -> str:
    """The file suffix of encoded image bytes by their signature (".bin" when no known format matches)."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    return next((suffix for signature, suffix in _SIGNATURES if data.startswith(signature)), ".bin")


class ImageDecodeError(ValueError):
    """An image payload cannot be turned into an RGB array; the message says why."""


class ImageTooLarge(ImageDecodeError):
    """The image is above a pixel, side or decoded-size limit; it was not decoded."""


def decode_image(
    data: bytes,
    max_pixels: int | None = None,
    max_side: int | None = None,
    max_decoded_bytes: int | None = None,
) -> np.ndarray:
    """Decode image file bytes into a float32 array (3, H, W) in [0, 1], EXIF orientation applied.

    Limits (None: none) are checked on the header's size before decoding: width * height <= max_pixels,
    max(width, height) <= max_side, 12 * width * height <= max_decoded_bytes. Raises ImageTooLarge above
    one, ImageDecodeError for empty, zero-size, corrupt, truncated or unsupported-mode images.
    """
    if len(data) == 0:
        raise ImageDecodeError("image payload is empty (zero bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            _check_size(image.size, max_pixels, max_side, max_decoded_bytes)
            image.load()  # the first frame only, whatever n_frames says
            image = ImageOps.exif_transpose(image)
    except ImageDecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageTooLarge(f"image is too large to decode safely: {error}") from error
    except Exception as error:  # PIL raises many types for corrupt files (OSError, SyntaxError, ValueError...)
        raise ImageDecodeError(
            f"corrupt or unrecognised image data ({len(data)} bytes): {type(error).__name__}: {str(error)[:300]}"
        ) from error
    return _to_rgb_array(image)


def _check_size(
    size: tuple[int, int], max_pixels: int | None, max_side: int | None, max_decoded_bytes: int | None
) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise ImageDecodeError(f"image has zero size ({width}x{height})")
    if max_side is not None and max(width, height) > max_side:
        raise ImageTooLarge(f"image is {width}x{height} pixels, a side above the limit of {max_side}")
    if max_pixels is not None and width * height > max_pixels:
        raise ImageTooLarge(f"image is {width}x{height} pixels, above the limit of {max_pixels}")
    decoded = DECODED_BYTES_PER_PIXEL * width * height
    if max_decoded_bytes is not None and decoded > max_decoded_bytes:
        raise ImageTooLarge(
            f"image is {width}x{height} pixels, {decoded} bytes decoded, above the limit of {max_decoded_bytes}"
        )


def _to_rgb_array(image: Image.Image) -> np.ndarray:
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES or mode in {"I", "F"}:
        grey = np.asarray(image, dtype=np.float32)
        if mode == "F":
            grey = np.nan_to_num(grey, nan=0.0, posinf=1.0, neginf=0.0)
        else:
            grey = grey / _SIXTEEN_BIT_LEVELS
        grey = np.clip(grey, 0.0, 1.0)
        return np.repeat(grey[None], 3, axis=0)
    if mode not in _CONVERTIBLE_MODES:
        raise ImageDecodeError(f"unsupported image mode {mode!r}")
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return np.ascontiguousarray(rgb.transpose(2, 0, 1))
