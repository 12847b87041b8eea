"""Shared checks readers use to fail with a message that names what is missing."""

from __future__ import annotations

from pathlib import Path

from pipelines.datasets.sample import DatasetLayoutError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})


def require_dir(path: Path, dataset: str) -> Path:
    """Return `path` if it is a directory, else raise naming the dataset and the missing folder."""
    if not path.is_dir():
        raise DatasetLayoutError(f"{dataset}: expected folder {path} is missing")
    return path


def require_file(path: Path, dataset: str) -> Path:
    """Return `path` if it is a file, else raise naming the dataset and the missing file."""
    if not path.is_file():
        raise DatasetLayoutError(f"{dataset}: expected file {path} is missing")
    return path


def list_images(folder: Path, dataset: str, *, allow_empty: bool = False) -> list[Path]:
    """Sorted image files directly inside `folder` (non-recursive)."""
    require_dir(folder, dataset)
    images = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not images and not allow_empty:
        raise DatasetLayoutError(f"{dataset}: folder {folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return images
