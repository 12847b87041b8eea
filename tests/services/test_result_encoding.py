"""16-bit map PNG round trip, jet colormap and overlays."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from services.imaging.decoding import ImageDecodeError
from services.results.encoding import (
    decode_map_png,
    encode_map_png,
    jet_colormap,
    render_overlay_jpeg,
    resize_map,
)


def encoded(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def test_map_png_round_trip_is_sixteen_bit_accurate() -> None:
    anomaly_map = np.random.default_rng(1).random((15, 17), dtype=np.float32)
    anomaly_map[0, 0], anomaly_map[0, 1] = 0.0, 1.0
    data = encode_map_png(anomaly_map)
    assert Image.open(io.BytesIO(data)).mode == "I;16"
    decoded = decode_map_png(data)
    assert decoded.shape == (15, 17)
    assert np.abs(decoded - anomaly_map).max() <= 0.5 / 65535 + 1e-7
    assert decoded[0, 0] == 0.0 and decoded[0, 1] == 1.0


@pytest.mark.parametrize(
    ("bad_map", "message"),
    [
        (np.zeros((2, 2, 2)), "shape"),
        (np.zeros((0, 4)), "shape"),
        (np.array([[0.5, np.nan]]), "NaN"),
        (np.array([[0.5, 1.2]]), r"\[0, 1\]"),
    ],
)
def test_invalid_maps_are_refused(bad_map: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        encode_map_png(bad_map)


def test_decode_map_png_refuses_eight_bit_images() -> None:
    with pytest.raises(ImageDecodeError, match="16-bit"):
        decode_map_png(encoded(Image.new("RGB", (2, 2))))


def test_jet_colormap_runs_blue_to_red() -> None:
    colours = jet_colormap(np.array([0.0, 0.5, 1.0])).astype(int)
    low, middle, high = colours
    assert low[2] > 0 and low[0] == 0  # blue end
    assert middle[1] == 255 and middle[0] == middle[2]  # green centre
    assert high[0] > 0 and high[2] == 0  # red end
    values = np.linspace(0, 1, 50)
    red = jet_colormap(values)[:, 0].astype(int)
    assert red[-12] >= red[10]


def test_resize_map_is_bilinear_and_in_range() -> None:
    resized = resize_map(np.array([[0.0, 1.0]], dtype=np.float32), 4, 8)
    assert resized.shape == (4, 8)
    assert resized.min() >= 0.0 and resized.max() <= 1.0
    assert np.all(np.diff(resized[0]) >= 0)


def test_overlay_marks_the_hot_region_red_over_a_grey_image() -> None:
    image = np.full((3, 64, 64), 0.5, dtype=np.float32)
    anomaly_map = np.zeros((8, 8), dtype=np.float32)
    anomaly_map[:2, :2] = 1.0
    overlay = np.asarray(Image.open(io.BytesIO(render_overlay_jpeg(image, anomaly_map, opacity=0.6))), dtype=int)
    assert overlay.shape == (64, 64, 3)
    hot, cold = overlay[4, 4], overlay[60, 60]
    assert hot[0] > hot[2] + 40  # red over the anomaly
    assert cold[2] > cold[0] + 40  # blue where the map is zero
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        render_overlay_jpeg(image[0], anomaly_map)
