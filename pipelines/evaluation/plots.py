"""ROC curves and a montage of anomaly maps as PNG files (matplotlib, Agg: no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first
import numpy as np  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

from pipelines.evaluation.harness import Case, Example  # noqa: E402


def plot_roc_curves(
    curves: dict[tuple[str, int, str], tuple[np.ndarray, np.ndarray]], categories: Sequence[str], path: Path, title: str
) -> Path:
    """One panel per category, one image-level ROC curve per method."""
    columns = min(4, len(categories))
    rows = -(-len(categories) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.2 * rows), squeeze=False)
    for axis, category in zip(axes.flat, categories):
        for (name, _, method), (scores, labels) in sorted(curves.items()):
            if name == category:
                fpr, tpr, _ = roc_curve(labels, scores)
                axis.plot(fpr, tpr, label=method)
        axis.plot([0, 1], [0, 1], color="grey", linewidth=0.5, linestyle="--")
        axis.set(title=category, xlabel="FPR", ylabel="TPR", xlim=(0, 1), ylim=(0, 1.01))
        axis.legend(fontsize=7, loc="lower right")
    for axis in list(axes.flat)[len(categories) :]:
        axis.axis("off")
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


def plot_maps(examples: Sequence[Example], path: Path) -> Path:
    """One row per example: image, ground truth, then each method's map (each on its own min-max colour scale)."""
    methods = sorted(examples[0].maps)
    columns = 2 + len(methods)
    figure, axes = plt.subplots(len(examples), columns, figsize=(2.2 * columns, 2.2 * len(examples)), squeeze=False)
    for row, example in zip(axes, examples):
        row[0].imshow(example.image.permute(1, 2, 0).numpy())
        row[0].set_title(example.category, fontsize=8)
        row[1].imshow(example.mask.numpy(), cmap="gray", vmin=0, vmax=1)
        row[1].set_title("ground truth", fontsize=8)
        for axis, method in zip(row[2:], methods):
            heat = example.maps[method].numpy()
            axis.imshow(heat, cmap="jet", vmin=float(heat.min()), vmax=float(heat.max()) + 1e-8)
            axis.set_title(method, fontsize=8)
        for axis in row:
            axis.axis("off")
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return path


def plot_error_montage(cases: Sequence[Case], path: Path) -> Path:
    """The served detector's worst false positives and worst missed defects at its calibrated threshold.

    Each panel: the image, the map blended on the domain's calibrated colour range (jet, low = blue,
    high = red), the outline of the region above the pixel threshold (white) and the ground-truth defect
    outline (dashed green); the title gives the score against the image threshold.
    """
    columns = min(4, len(cases))
    rows = -(-len(cases) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.0 * columns, 3.2 * rows), squeeze=False)
    for axis, case in zip(axes.flat, cases):
        low, high = case.calibration.map_range
        heat = case.anomaly_map.numpy()
        axis.imshow(case.image.permute(1, 2, 0).numpy())
        axis.imshow(heat, cmap="jet", vmin=low, vmax=high, alpha=0.45)
        if heat.max() >= case.calibration.pixel_threshold:
            axis.contour(heat, levels=[case.calibration.pixel_threshold], colors="white", linewidths=1.2)
        if case.mask.numpy().any():
            axis.contour(case.mask.numpy(), levels=[0.5], colors="lime", linewidths=1.0, linestyles="dashed")
        wrong = (case.score >= case.calibration.threshold) == (case.error == "false positive")
        label = case.error if wrong else ("highest normal" if case.error == "false positive" else "lowest defect")
        axis.set_title(f"{case.category}: {label}\nscore {case.score:.3f} / thr {case.calibration.threshold:.3f}", fontsize=7)
        axis.axis("off")
    for axis in list(axes.flat)[len(cases) :]:
        axis.axis("off")
    figure.suptitle("worst false positives and missed defects (white: above pixel threshold; green: ground truth)", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return path
