"""HeadCT (Kaggle head CT hemorrhage) in its published layout.

ROOT/labels.csv with header `id, hemorrhage` (ids 0..199, hemorrhage 0/1) and ROOT/head_ct/NNN.png (the
Kaggle archive nests a second head_ct/ folder; both are accepted). Image-level labels only; every sample
is a test sample of category "headct".
"""

from __future__ import annotations

import csv
from pathlib import Path

from pipelines.datasets.layout import require_dir, require_file
from pipelines.datasets.sample import ANOMALOUS, NORMAL, DatasetLayoutError, Sample

NAME = "headct"


def _image_folder(root: Path) -> Path:
    folder = require_dir(root / "head_ct", NAME)
    nested = folder / "head_ct"
    return nested if nested.is_dir() else folder


def read_head_ct(root: Path) -> list[Sample]:
    """One test sample per labels.csv row; hemorrhage 1 is anomalous."""
    labels = require_file(root / "labels.csv", NAME)
    folder = _image_folder(root)
    with labels.open(newline="") as handle:
        reader = csv.reader(handle, skipinitialspace=True)
        header = next(reader, None)
        if header is None or [h.strip() for h in header] != ["id", "hemorrhage"]:
            raise DatasetLayoutError(f"{NAME}: {labels} header must be 'id, hemorrhage', got {header}")
        rows = [(line, row) for line, row in enumerate(reader, start=2) if row]
    samples = []
    for line, row in rows:
        if len(row) != 2 or not row[0].strip().isdigit() or row[1].strip() not in ("0", "1"):
            raise DatasetLayoutError(f"{NAME}: {labels} line {line}: expected '<id>, <0|1>', got {row}")
        samples.append(
            Sample(
                image=require_file(folder / f"{int(row[0]):03d}.png", NAME),
                label=ANOMALOUS if row[1].strip() == "1" else NORMAL,
                mask=None,
                category=NAME,
                split="test",
            )
        )
    if not samples:
        raise DatasetLayoutError(f"{NAME}: {labels} lists no images")
    return samples
