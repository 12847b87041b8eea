"""Image- and pixel-level anomaly detection metrics as the field computes them.

AUPRO follows the MVTec AD definition: ground-truth regions are 8-connected components of each mask;
PRO at a threshold is the mean over ALL regions of all images of the fraction of the region's pixels
above the threshold; FPR is the fraction of normal pixels (of all images) above it. The PRO-over-FPR
curve is integrated (trapezoid) from FPR 0 to `fpr_limit`, interpolated at the limit, and divided by
`fpr_limit`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage
from sklearn.metrics import average_precision_score

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def _image_inputs(
    scores: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    score_array = np.asarray(scores, dtype=np.float64).ravel()
    label_array = np.asarray(labels).ravel()
    if score_array.shape != label_array.shape:
        raise ValueError(f"scores ({score_array.size}) and labels ({label_array.size}) differ in length")
    _check_binary(label_array, "labels")
    _check_finite(score_array, "scores")
    return score_array, label_array.astype(np.int8)


def _check_binary(labels: np.ndarray, what: str) -> None:
    values = set(np.unique(labels).tolist())
    if not values <= {0, 1}:
        raise ValueError(f"{what} must be 0 (normal) or 1 (anomalous), found {sorted(values)}")
    if values != {0, 1}:
        raise ValueError(f"{what} hold only class {sorted(values)}: the metric needs both normal and anomalous")


def _check_finite(values: np.ndarray, what: str) -> None:
    if not np.isfinite(values).all():
        raise ValueError(f"{what} contain NaN or infinite values")


def _pixel_inputs(
    maps: Sequence[np.ndarray] | np.ndarray, masks: Sequence[np.ndarray] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    map_array = np.asarray(maps, dtype=np.float32)
    mask_array = np.asarray(masks)
    if map_array.ndim == 2:
        map_array, mask_array = map_array[None], mask_array[None]
    if map_array.ndim != 3 or map_array.shape != mask_array.shape:
        raise ValueError(f"maps {map_array.shape} and masks {mask_array.shape} must both be (N, H, W) of equal shape")
    _check_finite(map_array, "maps")
    if not np.isin(mask_array, (0, 1)).all():
        raise ValueError(f"masks must be 0/1, found values {np.unique(mask_array)[:10].tolist()}")
    return map_array, mask_array.astype(bool)


def _auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Mann-Whitney AUROC: P(positive score > negative score) + P(tie) / 2.

    Sorting the two classes separately and counting with binary search keeps millions of pixels
    around a second, where a full ROC curve (sklearn) takes ten times longer.
    """
    negatives = np.sort(scores[~positive])
    positives = scores[positive]
    below = np.searchsorted(negatives, positives, side="left").astype(np.float64)
    not_above = np.searchsorted(negatives, positives, side="right").astype(np.float64)
    return float((below.sum() + not_above.sum()) / (2.0 * positives.size * negatives.size))


def image_auroc(scores: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray) -> float:
    """Area under the ROC curve of image scores against labels (1 anomalous)."""
    score_array, label_array = _image_inputs(scores, labels)
    return _auroc(score_array, label_array.astype(bool))


def image_ap(scores: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray) -> float:
    """Average precision of image scores, anomalous as the positive class."""
    score_array, label_array = _image_inputs(scores, labels)
    return float(average_precision_score(label_array, score_array))


def tpr_at_fpr(scores: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray, fpr: float) -> float:
    """Image-level true-positive rate at a false-positive rate of at most `fpr` (the factory's question:
    how many defects are caught if at most 1% of good parts are rejected?).

    Decision rule "anomalous iff score > t": with n normals, at most m = floor(fpr * n) may lie above t,
    so t is the (m+1)-th highest normal score and TPR = fraction of anomalous scores strictly above it
    (ties go against the detector); m = n allows every normal, TPR 1. No interpolation between points.
    """
    if not 0.0 <= fpr <= 1.0:
        raise ValueError(f"fpr must be in [0, 1], got {fpr}")
    score_array, label_array = _image_inputs(scores, labels)
    normals = np.sort(score_array[label_array == 0])[::-1]
    allowed = int(np.floor(fpr * normals.size + 1e-9))
    if allowed >= normals.size:
        return 1.0
    return float(np.mean(score_array[label_array == 1] > normals[allowed]))


def pixel_auroc(maps: Sequence[np.ndarray] | np.ndarray, masks: Sequence[np.ndarray] | np.ndarray) -> float:
    """ROC AUC over all pixels of all maps (N, H, W) against their 0/1 masks."""
    map_array, mask_array = _pixel_inputs(maps, masks)
    _check_binary(mask_array.ravel().astype(np.int8), "masks")
    return _auroc(map_array.ravel(), mask_array.ravel())


def aupro(
    maps: Sequence[np.ndarray] | np.ndarray, masks: Sequence[np.ndarray] | np.ndarray, fpr_limit: float = 0.3
) -> float:
    """Normalised area under the PRO curve up to `fpr_limit` (MVTec AD definition, 8-connectivity).

    Sort-based: only normal pixels set the FPR axis and only region pixels move PRO, so the curve is a
    staircase whose area is a sum over the top normal pixels of (1 / #normal) x PRO at that pixel's
    score. Normal and region pixels tied at one score form one sloped segment (the trapezoid the
    threshold sweep draws). Only normal pixels up to the limit are sorted, never all pixels.
    """
    if not 0.0 < fpr_limit <= 1.0:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
    map_array, mask_array = _pixel_inputs(maps, masks)
    regions = np.zeros(mask_array.shape, dtype=np.int32)
    region_count = 0
    for index, mask in enumerate(mask_array):
        labelled, found = ndimage.label(mask, structure=_EIGHT_CONNECTED)
        regions[index] = np.where(labelled > 0, labelled + region_count, 0)
        region_count += found
    normal_scores = map_array[~mask_array]
    if region_count == 0 or normal_scores.size == 0:
        raise ValueError("aupro needs masks with at least one anomalous region and at least one normal pixel")

    region_ids = regions[mask_array]
    region_sizes = np.bincount(region_ids)
    # Each region weighs 1/#regions in total, spread over its pixels.
    region_weights = 1.0 / (region_count * region_sizes[region_ids])
    order = np.argsort(-map_array[mask_array], kind="stable")
    region_desc = -map_array[mask_array][order]
    pro_at = np.concatenate([[0.0], np.cumsum(region_weights[order])])

    normal_count = normal_scores.size
    needed = min(normal_count, int(np.ceil(fpr_limit * normal_count)) + 1)
    top = np.partition(normal_scores, normal_count - needed)[normal_count - needed :]
    top_desc = -np.sort(top)[::-1]
    distinct, first, counts = np.unique(top_desc, return_index=True, return_counts=True)
    # The last group may be cut by the partition; its true size decides the segment's slope.
    counts[-1] = int(np.count_nonzero(normal_scores == -distinct[-1]))
    fpr_before = first / normal_count
    fpr_after = (first + counts) / normal_count
    pro_before = pro_at[np.searchsorted(region_desc, distinct, side="left")]
    pro_after = pro_at[np.searchsorted(region_desc, distinct, side="right")]

    inside = fpr_after <= fpr_limit
    area = float(np.sum((fpr_after[inside] - fpr_before[inside]) * (pro_before[inside] + pro_after[inside]) / 2.0))
    if not inside.all():
        cut = int(np.argmin(inside))
        width = fpr_limit - fpr_before[cut]
        slope = (pro_after[cut] - pro_before[cut]) / (fpr_after[cut] - fpr_before[cut])
        area += width * (pro_before[cut] + (pro_before[cut] + slope * width)) / 2.0
    return area / fpr_limit
