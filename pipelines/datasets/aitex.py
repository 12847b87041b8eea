"""AITEX fabric defects in the published layout.

ROOT/Defect_images/NNNN_DDD_FF.png with masks ROOT/Mask_images/NNNN_DDD_FF_mask.png (a few images have
several masks, `_mask1.png`, `_mask2.png`: they are merged into one PNG under the cache folder);
ROOT/NODefect_images/<fabric>/*.png normal images. No train split: every sample is a test sample of
category "aitex".
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from pipelines.datasets.layout import list_images, require_dir
from pipelines.datasets.png_cache import default_cache_dir, write_png_once
from pipelines.datasets.sample import ANOMALOUS, NORMAL, DatasetLayoutError, Sample

NAME = "aitex"


def _merged_mask(parts: list[Path], target: Path) -> Path:
    merged = None
    for part in parts:
        with Image.open(part) as image:
            pixels = np.asarray(image.convert("L")) > 0
        merged = pixels if merged is None else merged | pixels
    return write_png_once(target, merged.astype(np.uint8) * 255)


def _mask_for(image: Path, mask_dir: Path, cache_dir: Path) -> Path:
    parts = sorted(mask_dir.glob(f"{image.stem}_mask*.png"))
    if not parts:
        raise DatasetLayoutError(f"{NAME}: defect image {image.name} has no mask {image.stem}_mask*.png in {mask_dir}")
    if len(parts) == 1:
        return parts[0]
    return _merged_mask(parts, cache_dir / NAME / "merged_masks" / f"{image.stem}_mask.png")


def read_aitex(root: Path, cache_dir: Path | None = None) -> list[Sample]:
    """Normal fabric images and defect images with their (merged) masks."""
    cache = cache_dir or default_cache_dir(root)
    normal_root = require_dir(root / "NODefect_images", NAME)
    normal_images = [
        p for folder in sorted(normal_root.iterdir()) if folder.is_dir() for p in list_images(folder, NAME)
    ]
    normal_images += list_images(normal_root, NAME, allow_empty=True)
    if not normal_images:
        raise DatasetLayoutError(f"{NAME}: {normal_root} holds no images")
    mask_dir = require_dir(root / "Mask_images", NAME)
    samples = [Sample(image=p, label=NORMAL, mask=None, category=NAME, split="test") for p in sorted(normal_images)]
    samples += [
        Sample(image=p, label=ANOMALOUS, mask=_mask_for(p, mask_dir, cache), category=NAME, split="test")
        for p in list_images(root / "Defect_images", NAME)
    ]
    return samples
