"""One-vs-all and multi-class protocols for semantic datasets (MNIST, CIFAR-10).

The images of these datasets live in packed binary files; they are materialised as PNGs under a cache
folder once (cache/<split>/<class>/<index>.png) and the samples point at those files.

Protocols: `normal_classes=[c]` is one-vs-all (class c normal, every other class anomalous);
`normal_classes=[c1, c2, ...]` is multi-class (those classes normal); None runs one-vs-all for every
class, one category per class. A category is named after its normal classes joined by "+". The train
split keeps only normal-class images (the few-shot prompts come from it); the test split keeps all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipelines.datasets.png_cache import write_png_once
from pipelines.datasets.sample import ANOMALOUS, NORMAL, DatasetLayoutError, Sample, Split


@dataclass(frozen=True)
class LabelledImages:
    """Decoded images (N,H,W) or (N,H,W,3) uint8 with class indices (N,)."""

    pixels: np.ndarray
    classes: np.ndarray


def _class_indices(dataset: str, class_names: Sequence[str], normal_classes: Sequence[int | str]) -> list[int]:
    indices = []
    for wanted in normal_classes:
        if isinstance(wanted, int) and 0 <= wanted < len(class_names):
            indices.append(wanted)
        elif str(wanted) in class_names:
            indices.append(list(class_names).index(str(wanted)))
        else:
            raise ValueError(
                f"{dataset}: normal class {wanted!r} is not one of {list(class_names)} or 0..{len(class_names) - 1}"
            )
    if len(set(indices)) != len(indices) or len(indices) >= len(class_names):
        raise ValueError(
            f"{dataset}: normal classes {list(normal_classes)} must be distinct and leave some class anomalous"
        )
    return sorted(indices)


def _materialise(
    data: LabelledImages, indices: np.ndarray, split: Split, class_names: Sequence[str], cache_dir: Path
) -> dict[int, Path]:
    return {
        i: write_png_once(cache_dir / split / class_names[data.classes[i]] / f"{i:05d}.png", data.pixels[i])
        for i in indices.tolist()
    }


def semantic_samples(
    dataset: str,
    splits: dict[Split, LabelledImages],
    class_names: Sequence[str],
    normal_classes: Sequence[int | str] | None,
    cache_dir: Path,
) -> list[Sample]:
    """Samples of every requested protocol over the decoded splits."""
    for split, data in splits.items():
        out_of_range = data.classes[(data.classes < 0) | (data.classes >= len(class_names))]
        if out_of_range.size:
            raise DatasetLayoutError(
                f"{dataset}: {split} labels {sorted(set(out_of_range.tolist()))} outside 0..{len(class_names) - 1}"
            )
    protocols = (
        [[c] for c in range(len(class_names))]
        if normal_classes is None
        else [_class_indices(dataset, class_names, normal_classes)]
    )
    any_normal = sorted({c for normal in protocols for c in normal})
    # Only the images some protocol uses are written: train images of never-normal classes are skipped.
    paths = {
        split: _materialise(
            data,
            np.flatnonzero(np.isin(data.classes, any_normal)) if split == "train" else np.arange(len(data.classes)),
            split,
            class_names,
            cache_dir / dataset,
        )
        for split, data in splits.items()
    }
    samples = []
    for normal in protocols:
        category = "+".join(class_names[c] for c in normal)
        for split, data in splits.items():
            is_normal = np.isin(data.classes, normal)
            samples += [
                Sample(
                    image=paths[split][i],
                    label=NORMAL if is_normal[i] else ANOMALOUS,
                    mask=None,
                    category=category,
                    split=split,
                )
                for i in range(len(data.classes))
                if is_normal[i] or split != "train"
            ]
    return samples
