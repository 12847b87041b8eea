"""CIFAR-10 from its published binary version (no unpickling).

ROOT/cifar-10-batches-bin/ (or ROOT itself) with data_batch_1.bin .. data_batch_5.bin and test_batch.bin;
each record is 1 label byte followed by 3072 bytes: the 32x32 red, green and blue planes, row-major.
batches.meta.txt, when present, names the classes. Protocols: see pipelines.datasets.semantic.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipelines.datasets.png_cache import default_cache_dir
from pipelines.datasets.sample import DatasetLayoutError, Sample
from pipelines.datasets.semantic import LabelledImages, semantic_samples

NAME = "cifar10"
CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
_SIDE = 32
_RECORD = 1 + 3 * _SIDE * _SIDE
_TRAIN_BATCHES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))


def read_cifar_batch(path: Path) -> LabelledImages:
    """Decode one binary batch file into HxWx3 images and class indices."""
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % _RECORD:
        raise DatasetLayoutError(f"{NAME}: {path} holds {raw.size} bytes, not a whole number of {_RECORD}-byte records")
    records = raw.reshape(-1, _RECORD)
    pixels = records[:, 1:].reshape(-1, 3, _SIDE, _SIDE).transpose(0, 2, 3, 1)
    return LabelledImages(pixels=np.ascontiguousarray(pixels), classes=records[:, 0].astype(np.int64))


def _batch_dir(root: Path) -> Path:
    nested = root / "cifar-10-batches-bin"
    folder = nested if nested.is_dir() else root
    missing = [name for name in (*_TRAIN_BATCHES, "test_batch.bin") if not (folder / name).is_file()]
    if missing:
        raise DatasetLayoutError(f"{NAME}: {folder} lacks batch files {missing}")
    return folder


def _class_names(folder: Path) -> tuple[str, ...]:
    meta = folder / "batches.meta.txt"
    if not meta.is_file():
        return CLASS_NAMES
    names = tuple(line.strip() for line in meta.read_text().splitlines() if line.strip())
    if len(names) != len(CLASS_NAMES):
        raise DatasetLayoutError(f"{NAME}: {meta} names {len(names)} classes, expected {len(CLASS_NAMES)}")
    return names


def read_cifar10(
    root: Path, normal_classes: Sequence[int | str] | None = None, cache_dir: Path | None = None
) -> list[Sample]:
    """CIFAR-10 samples under the one-vs-all or multi-class protocol."""
    folder = _batch_dir(root)
    train_parts = [read_cifar_batch(folder / name) for name in _TRAIN_BATCHES]
    splits = {
        "train": LabelledImages(
            pixels=np.concatenate([p.pixels for p in train_parts]),
            classes=np.concatenate([p.classes for p in train_parts]),
        ),
        "test": read_cifar_batch(folder / "test_batch.bin"),
    }
    return semantic_samples(NAME, splits, _class_names(folder), normal_classes, cache_dir or default_cache_dir(root))
