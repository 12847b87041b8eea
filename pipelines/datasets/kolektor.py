"""KolektorSDD (SDD) in its published layout.

ROOT/kosNN/PartK.jpg with its pixel annotation ROOT/kosNN/PartK_label.bmp. A part is anomalous when its
label image has any non-zero pixel. No train split: every sample is a test sample of category "sdd".
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from pipelines.datasets.layout import require_dir, require_file
from pipelines.datasets.sample import ANOMALOUS, NORMAL, DatasetLayoutError, Sample

NAME = "sdd"


def read_kolektor(root: Path) -> list[Sample]:
    """One test sample per PartK.jpg; the label bmp is kept as mask for anomalous parts."""
    require_dir(root, NAME)
    folders = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("kos"))
    if not folders:
        raise DatasetLayoutError(f"{NAME}: no kosNN folders under {root}")
    samples = []
    for folder in folders:
        images = sorted(p for p in folder.glob("Part*.jpg") if not p.stem.endswith("_label"))
        if not images:
            raise DatasetLayoutError(f"{NAME}: folder {folder} holds no PartK.jpg images")
        for image in images:
            label_path = require_file(folder / f"{image.stem}_label.bmp", NAME)
            with Image.open(label_path) as label_image:
                anomalous = bool(np.asarray(label_image).any())
            samples.append(
                Sample(
                    image=image,
                    label=ANOMALOUS if anomalous else NORMAL,
                    mask=label_path if anomalous else None,
                    category=NAME,
                    split="test",
                )
            )
    return samples
