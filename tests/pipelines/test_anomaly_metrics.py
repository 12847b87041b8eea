"""Metrics against hand-derived cases, independent oracles and edge cases."""

from __future__ import annotations

import time

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import roc_auc_score

from pipelines.metrics import aupro, image_ap, image_auroc, pixel_auroc


def test_image_auroc_by_hand() -> None:
    # Positives 0.35, 0.8; negatives 0.1, 0.4. Pairs won: 0.35>0.1, 0.8>0.1, 0.8>0.4; lost: 0.35<0.4 -> 3/4.
    assert image_auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    # A tie counts half.
    assert image_auroc([0.5, 0.5], [0, 1]) == pytest.approx(0.5)


def test_image_ap_by_hand() -> None:
    # Ranked: 0.8(+) 0.4(-) 0.35(+) 0.1(-). Recall steps 0.5 at precision 1, 1.0 at precision 2/3:
    # AP = 0.5 * 1 + 0.5 * 2/3 = 5/6.
    assert image_ap([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(5 / 6)


def test_pixel_auroc_by_hand_and_against_sklearn() -> None:
    # Positives 0.9, 0.4; negatives 0.2, 0.6: won 0.9>0.2, 0.9>0.6, 0.4>0.2; lost 0.4<0.6 -> 3/4.
    assert pixel_auroc(np.array([[0.9, 0.2], [0.6, 0.4]]), np.array([[1, 0], [0, 1]])) == pytest.approx(0.75)
    rng = np.random.default_rng(3)
    maps = np.round(rng.random((4, 16, 16)), 1)
    masks = (rng.random((4, 16, 16)) < 0.2).astype(np.uint8)
    assert pixel_auroc(maps, masks) == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()))


def test_aupro_by_hand() -> None:
    # One row: A A N N B N N (regions A = cols 0-1, B = col 4; 4 normal pixels).
    # Sweep: 0.9 -> A half covered, PRO (0.5 + 0) / 2 = 0.25 at FPR 0; 0.8 -> FPR 0.25;
    # 0.7 -> B covered, PRO 0.75; 0.5 -> FPR 0.5. Area to 0.3: 0.25*0.25 + 0.05*0.75 = 0.1; /0.3 = 1/3.
    scores = np.array([[0.9, 0.3, 0.8, 0.5, 0.7, 0.2, 0.1]])
    mask = np.array([[1, 1, 0, 0, 1, 0, 0]])
    assert aupro(scores, mask) == pytest.approx(1 / 3)
    # Full curve: 0.25*0.25 + 0.25*0.75 + (0.3 covers A fully: PRO 1) 0.5*1 = 0.75.
    assert aupro(scores, mask, fpr_limit=1.0) == pytest.approx(0.75)


def test_aupro_tie_is_a_sloped_segment_interpolated_at_the_limit() -> None:
    # Region pixel and one of two normal pixels tie at 0.5: the sweep jumps from (0, 0) to (0.5, 1).
    # Linear interpolation: PRO = 2 * FPR; area to 0.3 = 0.3^2 = 0.09; /0.3 = 0.3.
    assert aupro(np.array([[0.5, 0.5, 0.1]]), np.array([[1, 0, 0]])) == pytest.approx(0.3)


def test_aupro_uses_eight_connectivity() -> None:
    # Region pixels (0,0), (1,1), (1,2): one 8-connected region of 3 (two 4-connected regions).
    # Only (0,0) scores above the normal pixels (all tied at 0.5): PRO jumps to 1/3 at FPR 0, then the
    # tie carries FPR straight to 1 with PRO still 1/3. Normalised area = 1/3 (4-connectivity: 1/2).
    scores = np.array([[0.9, 0.5, 0.5], [0.5, 0.0, 0.0], [0.5, 0.5, 0.5]])
    mask = np.array([[1, 0, 0], [0, 1, 1], [0, 0, 0]])
    assert aupro(scores, mask) == pytest.approx(1 / 3)


def threshold_sweep_aupro(maps: np.ndarray, masks: np.ndarray, fpr_limit: float) -> float:
    """Oracle: explicit sweep over every distinct threshold, trapezoid with interpolation at the limit."""
    regions = []
    for index, mask in enumerate(masks):
        labelled, count = ndimage.label(mask, structure=np.ones((3, 3)))
        regions += [(index, labelled == k) for k in range(1, count + 1)]
    normal = ~masks.astype(bool)
    fprs, pros = [0.0], [0.0]
    for threshold in np.unique(maps)[::-1]:
        above = maps >= threshold
        fprs.append(float((above & normal).sum() / normal.sum()))
        pros.append(float(np.mean([above[i][region].mean() for i, region in regions])))
    fprs_arr, pros_arr = np.array(fprs), np.array(pros)
    cut = int(np.searchsorted(fprs_arr, fpr_limit, side="right"))
    xs, ys = list(fprs_arr[:cut]), list(pros_arr[:cut])
    if cut < len(fprs_arr):
        x0, x1, y0, y1 = fprs_arr[cut - 1], fprs_arr[cut], pros_arr[cut - 1], pros_arr[cut]
        xs.append(fpr_limit)
        ys.append(y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0))
    return float(np.trapezoid(ys, xs) / fpr_limit)


@pytest.mark.parametrize("fpr_limit", [0.05, 0.3, 1.0])
def test_aupro_matches_threshold_sweep(fpr_limit: float) -> None:
    rng = np.random.default_rng(9)
    masks = np.zeros((3, 20, 20), dtype=np.uint8)
    masks[0, 2:6, 3:9] = 1
    masks[0, 12:14, 12:19] = 1
    masks[2, 8:15, 5:7] = 1
    maps = np.round(rng.random((3, 20, 20)) * 0.6 + masks * rng.random((3, 20, 20)) * 0.5, 2)
    assert aupro(maps, masks, fpr_limit) == pytest.approx(threshold_sweep_aupro(maps, masks, fpr_limit), abs=1e-9)


def test_perfect_and_inverted_maps() -> None:
    masks = np.zeros((2, 8, 8), dtype=np.uint8)
    masks[0, 2:4, 2:4] = 1
    assert aupro(masks.astype(float), masks) == pytest.approx(1.0)
    assert pixel_auroc(masks.astype(float), masks) == pytest.approx(1.0)
    assert aupro(1.0 - masks, masks) == pytest.approx(0.0)


def test_one_class_only_and_bad_shapes_raise() -> None:
    with pytest.raises(ValueError, match="only class"):
        image_auroc([0.1, 0.2], [0, 0])
    with pytest.raises(ValueError, match="only class"):
        image_ap([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="differ in length"):
        image_auroc([0.1, 0.2, 0.3], [0, 1])
    with pytest.raises(ValueError, match="NaN"):
        image_auroc([np.nan, 0.2], [0, 1])
    empty = np.zeros((1, 4, 4))
    with pytest.raises(ValueError, match="only class"):
        pixel_auroc(empty, empty)
    with pytest.raises(ValueError, match="at least one anomalous region"):
        aupro(empty, empty)
    with pytest.raises(ValueError, match="equal shape"):
        aupro(np.zeros((1, 4, 4)), np.zeros((1, 4, 5)))
    with pytest.raises(ValueError, match="masks must be 0/1"):
        aupro(empty, np.full((1, 4, 4), 255))
    with pytest.raises(ValueError, match="fpr_limit"):
        aupro(empty, empty, fpr_limit=0.0)


def test_pixel_metrics_on_three_hundred_maps_are_fast() -> None:
    rng = np.random.default_rng(0)
    masks = np.zeros((300, 256, 256), dtype=np.uint8)
    for index, (top, left) in enumerate(rng.integers(0, 220, size=(300, 2))):
        masks[index, top : top + 30, left : left + 20] = 1
    maps = (rng.random(masks.shape) * 0.7 + masks * 0.3).astype(np.float32)
    started = time.perf_counter()
    aupro(maps, masks)
    aupro_seconds = time.perf_counter() - started
    started = time.perf_counter()
    pixel_auroc(maps, masks)
    auroc_seconds = time.perf_counter() - started
    # Loose bounds for a loaded 2-core CI box; measured about 0.9 s and 0.75 s here.
    assert aupro_seconds < 4.0 and auroc_seconds < 4.0, (aupro_seconds, auroc_seconds)


def test_tpr_at_fpr_by_hand() -> None:
    from pipelines.metrics import tpr_at_fpr

    normals = [0.1 * i for i in range(1, 21)]  # 0.1 .. 2.0, twenty normals
    anomalies = [0.5, 1.5, 1.95, 1.99, 2.5]
    scores, labels = normals + anomalies, [0] * 20 + [1] * 5
    # 1% of 20 normals allows none above t: t = 2.0, only 2.5 is caught.
    assert tpr_at_fpr(scores, labels, 0.01) == pytest.approx(1 / 5)
    # 5% allows one (2.0): t = 1.9; 1.95, 1.99 and 2.5 are caught.
    assert tpr_at_fpr(scores, labels, 0.05) == pytest.approx(3 / 5)
    # 10% allows two: t = 1.8, the same three; 30% allows six: t = 1.4, so 1.5 joins.
    assert tpr_at_fpr(scores, labels, 0.30) == pytest.approx(4 / 5)
    assert tpr_at_fpr(scores, labels, 1.0) == 1.0
    # A tie with the threshold normal counts against the detector.
    assert tpr_at_fpr([0.2, 0.5, 0.5], [0, 0, 1], 0.0) == 0.0
