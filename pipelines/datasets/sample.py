"""The one record type every dataset reader returns, and the error readers raise on a bad layout."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

NORMAL = 0
ANOMALOUS = 1

Split = Literal["train", "valid", "test"]


class DatasetLayoutError(ValueError):
    """A dataset folder does not match the published layout its reader expects."""


@dataclass(frozen=True, slots=True)
class Sample:
    """One image of a dataset.

    `image` and `mask` are always files on disk: readers of binary-packed datasets (MNIST, CIFAR-10)
    materialise PNGs into a cache folder once, so every downstream consumer handles one kind of record.
    `mask` is None when the dataset has no pixel annotation for this image (normal images, or
    image-level-only datasets); `load_mask` then returns an all-zero mask for normal images.
    """

    image: Path
    label: int
    mask: Path | None
    category: str
    split: Split

    def __post_init__(self) -> None:
        if self.label not in (NORMAL, ANOMALOUS):
            raise ValueError(f"Sample label must be 0 (normal) or 1 (anomalous), got {self.label!r} for {self.image}")
        if self.split not in ("train", "valid", "test"):
            raise ValueError(f"Sample split must be train, valid or test, got {self.split!r} for {self.image}")
