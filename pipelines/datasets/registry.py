"""Dataset names to readers: `read_dataset(name, root, **options)`."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from pathlib import Path

from pipelines.datasets.aitex import read_aitex
from pipelines.datasets.brain_mri import read_brain_mri
from pipelines.datasets.brats import read_brats
from pipelines.datasets.cifar10 import read_cifar10
from pipelines.datasets.elpv import read_elpv
from pipelines.datasets.folder import read_folder
from pipelines.datasets.head_ct import read_head_ct
from pipelines.datasets.kolektor import read_kolektor
from pipelines.datasets.mnist import read_mnist
from pipelines.datasets.mvtec import read_mvtec
from pipelines.datasets.sample import Sample
from pipelines.datasets.visa import read_visa

logger = logging.getLogger(__name__)

DATASET_READERS: dict[str, Callable[..., list[Sample]]] = {
    "mvtec": read_mvtec,
    "visa": read_visa,
    "elpv": read_elpv,
    "sdd": read_kolektor,
    "aitex": read_aitex,
    "brainmri": read_brain_mri,
    "headct": read_head_ct,
    "brats": read_brats,
    "mnist": read_mnist,
    "cifar10": read_cifar10,
    "folder": read_folder,
}


def read_dataset(name: str, root: Path | str, **options: object) -> list[Sample]:
    """Read dataset `name` from `root` in its published layout; options go to its reader."""
    if name not in DATASET_READERS:
        raise ValueError(f"unknown dataset {name!r}; known: {sorted(DATASET_READERS)}")
    reader = DATASET_READERS[name]
    accepted = set(inspect.signature(reader).parameters) - {"root"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ValueError(f"dataset {name!r} does not take options {unknown}; it takes {sorted(accepted)}")
    samples = reader(Path(root), **options)
    logger.info(
        "read dataset",
        extra={"dataset": name, "root": str(root), "samples": len(samples), "anomalous": sum(s.label for s in samples)},
    )
    return samples
