"""ELPV (electroluminescence solar cells) in its published layout.

ROOT/labels.csv: whitespace-separated rows `images/cellNNNN.png <defect probability> <mono|poly>`;
ROOT/images/*.png. A cell is anomalous when its defect probability is above 0. No train split and no
masks: every sample is a test sample of category "elpv".
"""

from __future__ import annotations

from pathlib import Path

from pipelines.datasets.layout import require_dir, require_file
from pipelines.datasets.sample import ANOMALOUS, NORMAL, DatasetLayoutError, Sample

NAME = "elpv"


def read_elpv(root: Path) -> list[Sample]:
    """One test sample per labelled cell."""
    labels = require_file(root / "labels.csv", NAME)
    require_dir(root / "images", NAME)
    samples = []
    for line, text in enumerate(labels.read_text().splitlines(), start=1):
        fields = text.split()
        if not fields:
            continue
        if len(fields) != 3:
            raise DatasetLayoutError(f"{NAME}: {labels} line {line}: expected 'path probability type', got {text!r}")
        try:
            probability = float(fields[1])
        except ValueError:
            raise DatasetLayoutError(
                f"{NAME}: {labels} line {line}: defect probability {fields[1]!r} is not a number"
            ) from None
        if not 0.0 <= probability <= 1.0:
            raise DatasetLayoutError(f"{NAME}: {labels} line {line}: defect probability {probability} outside [0, 1]")
        samples.append(
            Sample(
                image=require_file(root / fields[0], NAME),
                label=ANOMALOUS if probability > 0 else NORMAL,
                mask=None,
                category=NAME,
                split="test",
            )
        )
    if not samples:
        raise DatasetLayoutError(f"{NAME}: {labels} lists no images")
    return samples
