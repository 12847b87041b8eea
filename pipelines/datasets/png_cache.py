"""Materialising arrays as PNG files once, for datasets whose images are not plain files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

CACHE_FOLDER = "_inctrl_png"


def default_cache_dir(root: Path) -> Path:
    """Where a reader materialises PNGs when the caller does not choose a folder."""
    return root / CACHE_FOLDER


def write_png_once(path: Path, pixels: np.ndarray) -> Path:
    """Write `pixels` (HxW or HxWx3 uint8) to `path` unless it already exists.

    The write goes through a temporary file and a rename so an interrupted run never leaves a truncated
    PNG that later runs would take as done.
    """
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    Image.fromarray(np.ascontiguousarray(pixels)).save(partial, format="PNG")
    os.replace(partial, path)
    return path
