"""Decoding incoming frames: modes, EXIF orientation, multi-frame files, limits by pixels, side and decoded
size, and clear errors for empty, corrupt and truncated files."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from services.imaging.decoding import ImageDecodeError, ImageTooLarge, decode_image


def encoded(image: Image.Image, fmt: str = "PNG", **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def test_rgb_png_decodes_to_channel_first_unit_range() -> None:
    pixels = np.zeros((4, 6, 3), dtype=np.uint8)
    pixels[1, 2] = (255, 0, 51)
    array = decode_image(encoded(Image.fromarray(pixels)))
    assert array.shape == (3, 4, 6) and array.dtype == np.float32
    assert array[:, 1, 2].tolist() == pytest.approx([1.0, 0.0, 0.2])
    assert array.sum() == pytest.approx(1.2)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "1"])
def test_other_modes_become_three_channels(mode: str) -> None:
    image = Image.new(mode, (5, 3))
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    assert decode_image(encoded(image, fmt)).shape == (3, 3, 5)


def test_sixteen_bit_greyscale_keeps_its_range() -> None:
    levels = np.array([[0, 32768, 65535]], dtype=np.uint16)
    array = decode_image(encoded(Image.fromarray(levels)))
    assert array[0, 0].tolist() == pytest.approx([0.0, 32768 / 65535, 1.0])
    assert np.array_equal(array[0], array[2])


def test_empty_corrupt_truncated_and_oversize_images_raise_clear_errors() -> None:
    with pytest.raises(ImageDecodeError, match="empty"):
        decode_image(b"")
    with pytest.raises(ImageDecodeError, match="corrupt or unrecognised"):
        decode_image(b"definitely not an image")
    png = encoded(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)))
    with pytest.raises(ImageDecodeError, match="corrupt"):
        decode_image(png[: len(png) // 2])
    with pytest.raises(ImageTooLarge, match="64x64 pixels, above the limit of 1000"):
        decode_image(png, max_pixels=1000)


def test_float_tiff_is_read_as_unit_range_greyscale() -> None:
    values = np.array([[0.25, 2.0], [-1.0, 1.0]], dtype=np.float32)
    array = decode_image(encoded(Image.fromarray(values), "TIFF"))
    assert array.shape == (3, 2, 2)
    assert array[1].tolist() == [[0.25, 1.0], [0.0, 1.0]]


def test_exif_orientation_is_applied() -> None:
    pixels = np.zeros((2, 4, 3), dtype=np.uint8)
    pixels[0, 0] = 255  # top-left marker of a 4 wide, 2 high image
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    array = decode_image(encoded(image, "JPEG", exif=exif.tobytes(), quality=100))
    assert array.shape == (3, 4, 2)  # displayed upright: the sides swap
    assert array[0, 0, 1] > 0.8  # the marker moved to the top-right corner
    assert array[0, 0, 0] < 0.2


def test_multi_frame_files_decode_their_first_frame() -> None:
    frames = [Image.new("RGB", (3, 2), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    array = decode_image(buffer.getvalue())
    assert array.shape == (3, 2, 3)
    assert array[0].mean() > 0.9 and array[2].mean() < 0.1


@pytest.mark.parametrize(
    ("size", "limits", "message"),
    [
        ((500, 70000), {"max_side": 16384}, "a side above the limit of 16384"),
        ((70000, 1), {"max_side": 16384}, "a side above the limit of 16384"),
        ((6324, 6324), {"max_decoded_bytes": 268_435_456}, "bytes decoded, above the limit"),
        ((100, 100), {"max_pixels": 9999}, "above the limit of 9999"),
    ],
)
def test_limits_by_side_pixels_and_decoded_size_refuse_before_decoding(
    size: tuple[int, int], limits: dict[str, int], message: str
) -> None:
    data = encoded(Image.new("L", size))  # a few kB of PNG, however large it decodes
    with pytest.raises(ImageTooLarge, match=message):
        decode_image(data, **limits)


def test_float_nan_reads_as_zero() -> None:
    values = np.array([[np.nan, 0.5]], dtype=np.float32)
    array = decode_image(encoded(Image.fromarray(values), "TIFF"))
    assert array[0].tolist() == [[0.0, 0.5]]


def test_sixteen_bit_la_palette_cmyk_read_as_rgb() -> None:
    palette = Image.new("P", (2, 2))
    palette.putpalette([10, 20, 30] * 256)
    assert decode_image(encoded(palette))[:, 0, 0].tolist() == pytest.approx([10 / 255, 20 / 255, 30 / 255])
    assert decode_image(encoded(Image.new("LA", (2, 2), (200, 7)))).shape == (3, 2, 2)
    assert decode_image(encoded(Image.new("CMYK", (2, 2), (0, 0, 0, 0)), "TIFF"))[:, 0, 0].tolist() == [1.0, 1.0, 1.0]
