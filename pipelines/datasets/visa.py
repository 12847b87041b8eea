"""VisA in its published layout, driven by a split csv (e.g. split_csv/1cls.csv).

The csv has columns object,split,label,image,mask; `label` is "normal" or "anomaly"; `image` and `mask`
are paths relative to ROOT (mask empty for normal images).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from pipelines.datasets.layout import require_file
from pipelines.datasets.sample import ANOMALOUS, NORMAL, DatasetLayoutError, Sample

NAME = "visa"
_COLUMNS = ("object", "split", "label", "image", "mask")
_LABELS = {"normal": NORMAL, "anomaly": ANOMALOUS}


def read_visa(
    root: Path, split_csv: str = "split_csv/1cls.csv", categories: Sequence[str] | None = None
) -> list[Sample]:
    """Samples listed in the split csv, optionally restricted to some objects."""
    csv_path = require_file(root / split_csv, NAME)
    with csv_path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing_columns = [c for c in _COLUMNS if c not in (reader.fieldnames or [])]
        if missing_columns:
            raise DatasetLayoutError(f"{NAME}: {csv_path} lacks columns {missing_columns}")
        numbered_rows = list(enumerate(reader, start=2))
    if categories is not None:
        known = {row["object"] for _, row in numbered_rows}
        unknown = [c for c in categories if c not in known]
        if unknown:
            raise DatasetLayoutError(f"{NAME}: categories {unknown} not in {csv_path} (found {sorted(known)})")
        numbered_rows = [(line, row) for line, row in numbered_rows if row["object"] in set(categories)]
    samples = []
    for line, row in numbered_rows:
        if row["label"] not in _LABELS:
            raise DatasetLayoutError(f"{NAME}: {csv_path} line {line}: label {row['label']!r} is not normal/anomaly")
        if row["split"] not in ("train", "test"):
            raise DatasetLayoutError(f"{NAME}: {csv_path} line {line}: split {row['split']!r} is not train/test")
        label = _LABELS[row["label"]]
        mask = require_file(root / row["mask"], NAME) if label == ANOMALOUS and row["mask"] else None
        if label == ANOMALOUS and mask is None:
            raise DatasetLayoutError(f"{NAME}: {csv_path} line {line}: anomalous image {row['image']} has no mask")
        samples.append(
            Sample(
                image=require_file(root / row["image"], NAME),
                label=label,
                mask=mask,
                category=row["object"],
                split=row["split"],
            )
        )
    return samples
