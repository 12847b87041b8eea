"""MNIST from its published idx files, parsed with numpy (gzipped copies accepted).

ROOT/train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte
(each optionally with a .gz suffix). Protocols: see pipelines.datasets.semantic.
"""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipelines.datasets.png_cache import default_cache_dir
from pipelines.datasets.sample import DatasetLayoutError, Sample
from pipelines.datasets.semantic import LabelledImages, semantic_samples

NAME = "mnist"
CLASS_NAMES = tuple(str(d) for d in range(10))
_IDX_UBYTE = 0x08
_FILES = {"train": "train", "test": "t10k"}


def read_idx(path: Path) -> np.ndarray:
    """Decode an idx file of unsigned bytes (magic 0x0000 08 <ndim>, big-endian int32 dims)."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != _IDX_UBYTE:
        raise DatasetLayoutError(f"{NAME}: {path} is not an unsigned-byte idx file (bad magic {raw[:4].hex()})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    expected = int(np.prod(dims)) if dims else 0
    if len(raw) - header != expected:
        raise DatasetLayoutError(
            f"{NAME}: {path} declares shape {dims} ({expected} bytes) but holds {len(raw) - header}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _idx_path(root: Path, stem: str) -> Path:
    for candidate in (root / stem, root / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise DatasetLayoutError(f"{NAME}: expected file {root / stem} (or .gz) is missing")


def _split(root: Path, prefix: str) -> LabelledImages:
    pixels = read_idx(_idx_path(root, f"{prefix}-images-idx3-ubyte"))
    classes = read_idx(_idx_path(root, f"{prefix}-labels-idx1-ubyte"))
    if pixels.ndim != 3 or classes.ndim != 1 or len(pixels) != len(classes):
        raise DatasetLayoutError(f"{NAME}: {prefix} images {pixels.shape} and labels {classes.shape} do not match")
    return LabelledImages(pixels=pixels, classes=classes.astype(np.int64))


def read_mnist(
    root: Path, normal_classes: Sequence[int | str] | None = None, cache_dir: Path | None = None
) -> list[Sample]:
    """MNIST samples under the one-vs-all or multi-class protocol."""
    splits = {split: _split(root, prefix) for split, prefix in _FILES.items()}
    return semantic_samples(NAME, splits, CLASS_NAMES, normal_classes, cache_dir or default_cache_dir(root))
