"""BraTS as 2D slices in the BMAD benchmark layout (the published 2D release of BraTS2021 slices).

ROOT/train/good/img/*.png                      normal slices (train)
ROOT/<valid|test>/good/img/*.png               normal slices
ROOT/<valid|test>/Ungood/img/*.png             slices with tumour
ROOT/<valid|test>/Ungood/label/<same name>     tumour mask (non-zero = tumour)
valid/ is optional; train/ and test/ are required. Category "brats".
"""

from __future__ import annotations

from pathlib import Path

from pipelines.datasets.layout import list_images, require_dir, require_file
from pipelines.datasets.sample import ANOMALOUS, NORMAL, Sample, Split

NAME = "brats"


def _split_samples(split_dir: Path, split: Split) -> list[Sample]:
    samples = [
        Sample(image=p, label=NORMAL, mask=None, category=NAME, split=split)
        for p in list_images(split_dir / "good" / "img", NAME)
    ]
    if split == "train":
        return samples
    tumour = split_dir / "Ungood"
    samples += [
        Sample(image=p, label=ANOMALOUS, mask=require_file(tumour / "label" / p.name, NAME), category=NAME, split=split)
        for p in list_images(tumour / "img", NAME)
    ]
    return samples


def read_brats(root: Path) -> list[Sample]:
    """Samples of train, the optional valid, and test splits."""
    require_dir(root, NAME)
    splits: list[Split] = ["train", "valid", "test"] if (root / "valid").is_dir() else ["train", "test"]
    return [sample for split in splits for sample in _split_samples(require_dir(root / split, NAME), split)]
