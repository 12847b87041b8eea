"""A generic folder layout for users' own data.

ROOT/<category>/good/*        normal test images
ROOT/<category>/defect/*      anomalous test images
ROOT/<category>/masks/*       optional: one mask per defect image, same file stem (any image suffix)
ROOT/<category>/reference/*   optional: normal reference images the few-shot prompts are drawn from
                              (split "train"); never scored as queries
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pipelines.datasets.layout import list_images, require_dir
from pipelines.datasets.sample import ANOMALOUS, NORMAL, DatasetLayoutError, Sample

NAME = "folder"


def _masks_by_stem(mask_dir: Path) -> dict[str, Path]:
    masks: dict[str, Path] = {}
    for mask in list_images(mask_dir, NAME, allow_empty=True):
        if mask.stem in masks:
            raise DatasetLayoutError(f"{NAME}: two masks share the stem {mask.stem!r} in {mask_dir}")
        masks[mask.stem] = mask
    return masks


def _category_samples(base: Path) -> list[Sample]:
    category = base.name
    samples = []
    if (base / "reference").is_dir():
        samples += [
            Sample(image=p, label=NORMAL, mask=None, category=category, split="train")
            for p in list_images(base / "reference", NAME)
        ]
    samples += [
        Sample(image=p, label=NORMAL, mask=None, category=category, split="test")
        for p in list_images(base / "good", NAME)
    ]
    defects = list_images(base / "defect", NAME)
    masks = _masks_by_stem(base / "masks") if (base / "masks").is_dir() else None
    if masks is not None:
        unmasked = [p.name for p in defects if p.stem not in masks]
        if unmasked:
            raise DatasetLayoutError(f"{NAME}: {base / 'masks'} exists but lacks masks for {unmasked}")
    samples += [
        Sample(image=p, label=ANOMALOUS, mask=None if masks is None else masks[p.stem], category=category, split="test")
        for p in defects
    ]
    return samples


def read_folder(root: Path, categories: Sequence[str] | None = None) -> list[Sample]:
    """Samples of every category folder (or the chosen ones)."""
    require_dir(root, NAME)
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))
    chosen = found if categories is None else list(categories)
    missing = [c for c in chosen if c not in found]
    if missing or not chosen:
        raise DatasetLayoutError(f"{NAME}: categories {missing or '(none)'} not found under {root} (found {found})")
    return [sample for category in chosen for sample in _category_samples(root / category)]
