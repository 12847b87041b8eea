"""Per-domain calibration from normal images only: the image threshold for a target false-positive rate,
the pixel threshold and the anomaly map's display range.

Normal evidence comes from leave-one-out over the K references (reference i scored against the bank of
the other K - 1; the K images are encoded ONCE and the K banks are subsets of one bank, so calibration
costs K encodes, never K^2), or from a separate normal set scored against the full bank when one is given.

Image threshold for a target false-positive rate a from n >= 2 normal scores v_1..v_n in [0, 1]: with
z_j = logit(v_j), mean m and sample std s (ddof 1),

    t = sigmoid(m + q * s * sqrt(1 + 1/n)),   q = the (1 - a) quantile of Student's t with n - 1 dof,

the one-sided prediction bound for a new value of a Gaussian whose mean AND spread are estimated from the
n values: a new normal score exceeds t with probability a when the logits are Gaussian. (The standard
normal quantile in place of q treats s as exact; with n = 4 it lets several times the target through.)
Leave-one-out banks have one shot fewer than the served bank, so their normal scores run slightly high.
Four values can also come out nearly equal by chance (four very alike references), which makes s, and
the bound, far too small; under the standardised fusion the logit spread is therefore floored at half the
step one LOO spread of max M_x makes in the fused logit (w_Mx / (T sum_c w_c), model/fusion.py): a fresh
normal's max M_x varies by about one such spread by construction of the z-scores.
Measured on held-out TRAINING domains (synthetic brick, grass, capsule, pcb, EfficientNet-Lite0 on its
stride-8 grid, K = 4, 3 draws of references, the standardised fusion of max M_x and g; 192 normal and 576
defective test images) at a 1% target: Student's t alone gave FPR 6.8% (13/192; pcb 20.8%: its four LOO
scores nearly equal) and recall 56.6%, with the floor FPR 1.6% (3/192) and recall 55.7%; a floor of one
whole step 0/192 and 41.7%. (Earlier, on the stride-16 features: the normal quantile in place of q gave FPR
8.3%, Student 3.1%, the maximum of the n scores 16%.) A 1% rate needs a few
hundred normal images to be measured at all.

Nuisance views (model/nuisance.py). Four values are few, and four alike references say nothing about the
exposure or position of the next frame. Without a normal set, each reference therefore also gives
V / K views (by default 32 in all: exposure within +-15%, a shift within 2% of the side, reflected border,
and a linear illumination gradient of up to +-8% from the centre to an edge),
scored like the reference itself against the bank of the other K - 1; their scores join the K
leave-one-out scores and the bound above uses all K + V of them (Student's t with K + V - 1 dof: the views
of one reference are not independent, which the measurements check). `inctrl bench views` (benchmarks/views.md;
prompt draws of the evaluation harness, 1% target), on fresh validation images of the TRAINING domains
(1,200 normal, 480 defective): leave-one-out alone FPR 2.0% (24/1200), recall 46.9%; views shifted by up to
5% of the side (the previous default) 0.8%, 55.2%; **up to 2%: 0.5% (6/1200), 63.3% (chosen)**: a larger
shift moves an aligned part (a PCB) further than its frames ever move, and the bound rises with it (pcb
recall 74.2% -> 44.2%). The illumination gradient came next (`inctrl bench views`, the first section of
benchmarks/views.md, one training seed): on the validation images FPR 0.5% -> 0.5% (6/1200), recall 63.1%
-> 65.4% (chosen); on the unseen synthetic domains FPR 2.3% -> 0.3% (3/900), recall 65.8% -> 55.6%
(washer, whose normal frames saturate in a lit corner none of its references shows: FPR 7.0% -> 1.0%).
An earlier, uncommitted draw order of the same views gave 0.6% / 66.0% and 1.2% / 60.3%. An exploration
(uncommitted) also tried exposure-only views (FPR 3.3%: positions are what moves max M_x), shifts of up
to 1% (1.6%) and 3% (0.2%, recall 62.7%), the maximum of the K + V scores, and a correction for the one shot fewer of leave-one-out banks, estimated from K - 2 banks (no
systematic step between K - 2 and K - 1 was found). The views never set the pixel threshold: their
reflected borders are no real image region.

Pixel threshold: the highest value any normal map reached (the maximum of the n per-image maxima): a
pixel above it is above everything the normal images showed. A new normal image then shows a region with
probability about 1 / (n + 1) (order statistics; less with leave-one-out, whose maps run high), usually a
speck; the image verdict is the image threshold's. (The prediction bound above, applied to n = K per-image
maxima, came out far above the maps of visible defects on the synthetic products, hiding every outline.)
Display range: [median normal pixel, median + 2 (pixel threshold - median)], which puts the pixel threshold
in the middle of the colour scale (jet: green; above it yellow to red).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Literal

import torch

from .bank import PromptBank
from .detector import InCTRLv2
from .nuisance import NuisanceViews, views_per_reference

DEFAULT_TARGET_FPR = 0.01
# Calibration's nuisance views (module docstring): exposure, a small shift and an illumination gradient.
CALIBRATION_VIEWS = NuisanceViews(gradient=0.08)
_EPS = 1e-6  # logits of 0 and 1 are infinite
_MIN_LOGIT_STD = 1e-3  # identical normal values would otherwise give a zero-width bound
SPREAD_FLOOR_STEPS = 0.5  # the logit spread's floor, in LOO spreads of max M_x (module docstring)


class CalibrationError(ValueError):
    """Calibration is impossible with the images given (e.g. one reference and no normal set)."""


@dataclass(frozen=True)
class DomainCalibration:
    """What calibration found; scores and maps are those of the served detector."""

    method: Literal["leave-one-out", "normal-set"]
    target_fpr: float
    threshold: float  # image threshold
    normal_scores: list[float]  # the image threshold's normal evidence: real normals first, then nuisance views
    view_scores: int  # how many of normal_scores are nuisance views' (the last ones)
    pixel_threshold: float
    map_range: tuple[float, float]  # display range of the map's colour scale
    normal_map_maxima: list[float]
    defect_scores: list[float]
    recall: float | None  # fraction of defect_scores >= threshold; None without defect images


def student_t_cdf(x: float, dof: int) -> float:
    """P(T <= x) for Student's t with an integer dof >= 1, by the finite series of Abramowitz & Stegun 26.7.3-4."""
    theta = math.atan(x / math.sqrt(dof))
    cos2, term, total = math.cos(theta) ** 2, 1.0, 0.0
    if dof % 2:  # odd: (2/pi) (theta + sin cos (1 + 2/3 cos^2 + ...)), the series only for dof >= 3
        for j in range(1, (dof - 1) // 2):
            total += term
            term *= cos2 * (2 * j) / (2 * j + 1)
        total += term if dof > 1 else 0.0
        central = 2 / math.pi * (theta + math.sin(theta) * math.cos(theta) * total)
    else:  # even: sin (1 + 1/2 cos^2 + 1*3/(2*4) cos^4 + ...)
        for j in range(dof // 2):
            total += term
            term *= cos2 * (2 * j + 1) / (2 * j + 2)
        central = math.sin(theta) * total
    return 0.5 * (1.0 + central)


@functools.lru_cache(maxsize=256)  # few (target, n) pairs recur: every domain of a deployment
def student_t_quantile(p: float, dof: int) -> float:
    """The p quantile of Student's t (p in (0.5, 1)), by bisection of the exact CDF."""
    low, high = 0.0, 1.0
    while student_t_cdf(high, dof) < p:
        high *= 2.0
    for _ in range(100):
        middle = (low + high) / 2
        low, high = (middle, high) if student_t_cdf(middle, dof) < p else (low, middle)
    return (low + high) / 2


def fpr_threshold(values: list[float], target_fpr: float, min_logit_spread: float = 0.0) -> float:
    """The level a new normal value exceeds with probability target_fpr (module docstring); n >= 2, the
    logits' spread taken as at least ``min_logit_spread``."""
    if not 0.0 < target_fpr < 0.5:
        raise CalibrationError(f"target false-positive rate must lie in (0, 0.5), got {target_fpr}")
    if len(values) < 2:
        raise CalibrationError(f"a threshold needs at least 2 normal values, got {len(values)}")
    z = torch.logit(torch.tensor(values, dtype=torch.float64).clamp(_EPS, 1 - _EPS))
    n = len(values)
    spread = max(float(z.std(unbiased=True)), min_logit_spread, _MIN_LOGIT_STD) * math.sqrt(1.0 + 1.0 / n)
    bound = float(z.mean()) + student_t_quantile(1.0 - target_fpr, n - 1) * spread
    return float(torch.sigmoid(torch.tensor(bound, dtype=torch.float64)))


def min_logit_spread(detector: InCTRLv2, shots: int) -> float:
    """The floor of the normal logits' spread for a bank of ``shots`` references (module docstring): none where
    the score is not a logistic of z-scores (Eq 9, or K = 1, where s is max M_x itself)."""
    step = detector.image_fusion.logit_per_patch_spread(detector.component_names)
    return 0.0 if step is None or shots < 2 else SPREAD_FLOOR_STEPS * step


@torch.inference_mode()
def _score_against(detector: InCTRLv2, images: torch.Tensor, bank: PromptBank, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores (n,) and maps (n, H, W) of images against one bank, in batches."""
    scores, maps = [], []
    for start in range(0, len(images), batch_size):
        detection = detector.detect(images[start : start + batch_size], bank)
        scores.append(detection.scores.cpu())
        maps.append(detection.maps.cpu())
    return torch.cat(scores), torch.cat(maps)


@dataclass(frozen=True)
class LeaveOneOut:
    """Each reference (and each of its nuisance views) scored against the bank of the other K - 1."""

    bank: PromptBank  # of all K references
    scores: torch.Tensor  # (K,)
    maps: torch.Tensor  # (K, H, W)
    view_scores: torch.Tensor  # (V,): view j is of reference j mod K (NuisanceViews.owners)


@torch.inference_mode()
def leave_one_out(detector: InCTRLv2, references: torch.Tensor, class_name: str, views: NuisanceViews = CALIBRATION_VIEWS) -> LeaveOneOut:
    """(K, C, H, W) references -> the full bank, and each reference's score and map, and its views' scores,
    against the bank of the other K - 1. The K references are encoded in one batch, each one's views in
    another; needs K >= 2."""
    shots = len(references)
    if shots < 2:
        raise CalibrationError("leave-one-out calibration needs at least 2 reference images (or a set of normal images)")
    embedding, patches = detector.encode(references)
    singles = [references[i : i + 1] for i in range(shots)]
    bank = detector.bank_from_features(embedding, patches, class_name, detector.exposure_views(singles))
    size = tuple(references.shape[-2:])
    others = [bank.subset([j for j in range(shots) if j != i]) for i in range(shots)]
    scores, maps = [], []
    for i in range(shots):
        detection = detector.score(embedding[i : i + 1], patches[i : i + 1], others[i], size)
        scores.append(detection.scores.cpu())
        maps.append(detection.maps.cpu())
    view_scores = torch.zeros(views.count)
    for i, indices, drawn in views_per_reference(singles, views):
        view_scores[indices] = detector.detect(drawn, others[i]).scores.cpu()
    return LeaveOneOut(bank, torch.cat(scores), torch.cat(maps), view_scores)


def calibrate(
    detector: InCTRLv2,
    references: torch.Tensor,
    class_name: str,
    normals: torch.Tensor | None = None,
    defects: torch.Tensor | None = None,
    target_fpr: float = DEFAULT_TARGET_FPR,
    batch_size: int = 32,
    views: NuisanceViews = CALIBRATION_VIEWS,
) -> tuple[PromptBank, DomainCalibration]:
    """Calibrate a domain from (K, C, H, W) references, optional extra normals and optional defect images
    (the defects only measure the recall the threshold implies; they never move it). Without normals the
    references' nuisance ``views`` join their leave-one-out scores as normal evidence for the image threshold."""
    if normals is not None and len(normals):
        bank = detector.build_prompt_bank(references, class_name)
        normal_scores, normal_maps = _score_against(detector, normals, bank, batch_size)
        view_scores = torch.zeros(0)
        method: Literal["leave-one-out", "normal-set"] = "normal-set"
    else:
        found = leave_one_out(detector, references, class_name, views)
        bank, normal_scores, normal_maps, view_scores = found.bank, found.scores, found.maps, found.view_scores
        method = "leave-one-out"
    scores = torch.cat([normal_scores, view_scores]).double().tolist()
    maxima = normal_maps.flatten(1).amax(dim=1).double().tolist()
    threshold = fpr_threshold(scores, target_fpr, min_logit_spread(detector, bank.shots))
    pixel_threshold = max(maxima)
    median = float(normal_maps.double().median())
    low = min(median, pixel_threshold)
    high = min(1.0, max(low + 2.0 * (pixel_threshold - low), low + 1e-3))
    defect_scores: list[float] = []
    if defects is not None and len(defects):
        defect_scores = _score_against(detector, defects, bank, batch_size)[0].double().tolist()
    recall = sum(s >= threshold for s in defect_scores) / len(defect_scores) if defect_scores else None
    calibration = DomainCalibration(
        method=method, target_fpr=target_fpr, threshold=threshold, normal_scores=scores, view_scores=len(view_scores),
        pixel_threshold=pixel_threshold, map_range=(low, high), normal_map_maxima=maxima, defect_scores=defect_scores,
        recall=recall,
    )  # fmt: skip
    return bank, calibration
