"""BrainMRI (Kaggle brain tumour detection) in its published layout: ROOT/yes/* tumour, ROOT/no/* healthy.

Image-level labels only; every sample is a test sample of category "brainmri".
"""

from __future__ import annotations

from pathlib import Path

from pipelines.datasets.layout import list_images
from pipelines.datasets.sample import ANOMALOUS, NORMAL, Sample

NAME = "brainmri"


def read_brain_mri(root: Path) -> list[Sample]:
    """Healthy scans (no/) are normal, tumour scans (yes/) anomalous."""
    return [
        Sample(image=image, label=label, mask=None, category=NAME, split="test")
        for folder, label in (("no", NORMAL), ("yes", ANOMALOUS))
        for image in list_images(root / folder, NAME)
    ]
