"""load_image / load_mask: tensor shapes, ranges and the normal/anomalous mask rules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipelines.datasets import ANOMALOUS, NORMAL, Sample, load_image, load_mask


def test_rgb_and_grey_images_become_unit_range_rgb(tmp_path: Path) -> None:
    pixels = np.zeros((4, 5, 3), dtype=np.uint8)
    pixels[0, 0] = [255, 0, 51]
    Image.fromarray(pixels).save(tmp_path / "rgb.png")
    Image.fromarray(np.full((4, 5), 255, dtype=np.uint8)).save(tmp_path / "grey.png")
    rgb = load_image(Sample(image=tmp_path / "rgb.png", label=NORMAL, mask=None, category="c", split="test"))
    assert rgb.dtype == torch.float32 and rgb.shape == (3, 4, 5)
    assert rgb[:, 0, 0].tolist() == pytest.approx([1.0, 0.0, 0.2])
    grey = load_image(Sample(image=tmp_path / "grey.png", label=NORMAL, mask=None, category="c", split="test"), size=8)
    assert grey.shape == (3, 8, 8) and float(grey.min()) == pytest.approx(1.0)


def test_sixteen_bit_slices_scale_to_unit_range(tmp_path: Path) -> None:
    Image.fromarray(np.array([[0, 65535]], dtype=np.uint16)).save(tmp_path / "slice.png")
    image = load_image(Sample(image=tmp_path / "slice.png", label=NORMAL, mask=None, category="brats", split="test"))
    assert image[:, 0, :].tolist() == [[0.0, 1.0]] * 3


def test_masks_binary_resized_nearest_and_zero_for_normals(tmp_path: Path) -> None:
    mask = np.zeros((4, 4), dtype=np.uint8)
    mask[:2, :2] = 255
    Image.fromarray(mask).save(tmp_path / "m.png")
    Image.fromarray(np.zeros((4, 6), dtype=np.uint8)).save(tmp_path / "i.png")
    anomalous = Sample(image=tmp_path / "i.png", label=ANOMALOUS, mask=tmp_path / "m.png", category="c", split="test")
    loaded = load_mask(anomalous, size=8)
    assert loaded.dtype == torch.uint8 and loaded.shape == (8, 8)
    assert set(loaded.unique().tolist()) == {0, 1} and int(loaded.sum()) == 16
    normal = Sample(image=tmp_path / "i.png", label=NORMAL, mask=None, category="c", split="test")
    assert load_mask(normal).shape == (4, 6) and int(load_mask(normal, (3, 2)).sum()) == 0
    unannotated = Sample(image=tmp_path / "i.png", label=ANOMALOUS, mask=None, category="c", split="test")
    with pytest.raises(ValueError, match="has no pixel mask"):
        load_mask(unannotated)


def test_sample_rejects_bad_label_and_split(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="label must be 0"):
        Sample(image=tmp_path / "x.png", label=2, mask=None, category="c", split="test")
    with pytest.raises(ValueError, match="split must be"):
        Sample(image=tmp_path / "x.png", label=0, mask=None, category="c", split="val")  # type: ignore[arg-type]
