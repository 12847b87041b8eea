"""MVTec AD in its published layout.

ROOT/<category>/train/good/*.png
ROOT/<category>/test/<good|defect type>/*.png
ROOT/<category>/ground_truth/<defect type>/<stem>_mask.png
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pipelines.datasets.layout import list_images, require_dir, require_file
from pipelines.datasets.sample import ANOMALOUS, NORMAL, DatasetLayoutError, Sample

NAME = "mvtec"


def _categories(root: Path, wanted: Sequence[str] | None) -> list[str]:
    require_dir(root, NAME)
    found = sorted(p.name for p in root.iterdir() if (p / "train").is_dir() or (p / "test").is_dir())
    if wanted is None:
        if not found:
            raise DatasetLayoutError(f"{NAME}: no category folders with train/ or test/ under {root}")
        return found
    missing = [c for c in wanted if c not in found]
    if missing:
        raise DatasetLayoutError(f"{NAME}: categories {missing} not found under {root} (found {found})")
    return list(wanted)


def read_mvtec(root: Path, categories: Sequence[str] | None = None) -> list[Sample]:
    """All train and test samples of the chosen categories (default: every category folder)."""
    samples: list[Sample] = []
    for category in _categories(root, categories):
        base = root / category
        samples += [
            Sample(image=p, label=NORMAL, mask=None, category=category, split="train")
            for p in list_images(base / "train" / "good", NAME)
        ]
        test_dir = require_dir(base / "test", NAME)
        for kind_dir in sorted(p for p in test_dir.iterdir() if p.is_dir()):
            for image in list_images(kind_dir, NAME):
                if kind_dir.name == "good":
                    samples.append(Sample(image=image, label=NORMAL, mask=None, category=category, split="test"))
                    continue
                mask = require_file(base / "ground_truth" / kind_dir.name / f"{image.stem}_mask.png", NAME)
                samples.append(Sample(image=image, label=ANOMALOUS, mask=mask, category=category, split="test"))
    return samples
