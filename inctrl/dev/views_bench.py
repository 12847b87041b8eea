"""`inctrl bench views`: what the references' nuisance views change, per category (dev only).

Two ablations on one trained checkpoint, with the same prompt draws for both arms (pipelines/manifest.py):
- ranking: the served image AUROC with the bank's exposure views (FusionConfig.global_views, the
  standardisation of g) and without them, next to the training-free patch baseline (max M_x);
- thresholds: the false-positive rate and recall at the calibrated image threshold (target FPR) with
  calibration's nuisance views (model/nuisance.py: the default, and the default without its illumination
  gradient) and with the K leave-one-out scores alone.
Counts are pooled over prompt draws, so a 1% FPR is measured on (normals x draws) images.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from inctrl.dev.bench_inputs import CategoryInputs, bench_inputs, encode_samples
from model import InCTRLv2
from model.calibration import CALIBRATION_VIEWS, calibrate
from model.nuisance import NuisanceViews
from pipelines.datasets.sample import ANOMALOUS
from pipelines.metrics import image_auroc
ARMS = ("without views", "with views")
THRESHOLD_ARMS = {
    ARMS[0]: NuisanceViews(count=0),
    ARMS[1]: CALIBRATION_VIEWS,
    "with views, no gradient": CALIBRATION_VIEWS.model_copy(update={"gradient": 0.0}),
}


@dataclass
class CategoryAblation:
    """Per category: AUROC per draw for each arm and the patch baseline; pooled threshold counts per arm."""

    auroc: dict[str, list[float]] = field(default_factory=lambda: {arm: [] for arm in (*ARMS, "patch")})
    false_alarms: dict[str, int] = field(default_factory=lambda: dict.fromkeys(THRESHOLD_ARMS, 0))
    detected: dict[str, int] = field(default_factory=lambda: dict.fromkeys(THRESHOLD_ARMS, 0))
    normals: int = 0
    defects: int = 0


def ablate_category(detector: InCTRLv2, inputs: CategoryInputs, target_fpr: float, size: int) -> CategoryAblation:
    """Both ablations for one category, over its prompt draws."""
    test = inputs.test
    labels = np.array([s.label == ANOMALOUS for s in test])
    embedding, patches = encode_samples(detector, test, size)
    draws = len(inputs.prompts)
    found = CategoryAblation(normals=int((~labels).sum()) * draws, defects=int(labels.sum()) * draws)
    class_name = inputs.class_name
    for draw in inputs.prompts:
        references = inputs.references(draw, size).to(detector.device)
        ref_embedding, ref_patches = detector.encode(references)
        banks = {
            ARMS[0]: detector.bank_from_features(ref_embedding, ref_patches, class_name),
            ARMS[1]: detector.bank_from_features(
                ref_embedding, ref_patches, class_name, detector.exposure_views([r[None] for r in references])
            ),
        }
        for arm, bank in banks.items():
            detection = detector.score(embedding, patches, bank, (size, size))
            found.auroc[arm].append(image_auroc(detection.scores.cpu().numpy(), labels))
        found.auroc["patch"].append(image_auroc(detection.patch_scores.cpu().numpy(), labels))
        scores = detection.scores.cpu().numpy()  # the served detector: with the bank's exposure views
        for arm, views in THRESHOLD_ARMS.items():
            threshold = calibrate(detector, references, class_name, target_fpr=target_fpr, views=views)[1].threshold
            found.false_alarms[arm] += int((scores[~labels] >= threshold).sum())
            found.detected[arm] += int((scores[labels] >= threshold).sum())
    return found


def render(results: dict[str, CategoryAblation], target_fpr: float) -> str:
    """One markdown table: AUROC without / with exposure views and the patch baseline; FPR / recall at the
    calibrated threshold of each THRESHOLD_ARMS entry; then the mean (AUROC) and pooled (counts) row."""
    lines = [
        f"| category | served AUROC, {ARMS[0]} | served AUROC, {ARMS[1]} | patch-nn AUROC | "
        + " | ".join(f"FPR / recall at target {100 * target_fpr:g}%, {arm}" for arm in THRESHOLD_ARMS)
        + " |",
        "|---|---|---|---|" + "---|" * len(THRESHOLD_ARMS),
    ]

    def row(name: str, auroc: dict[str, float], alarms: dict[str, int], hits: dict[str, int], normals: int, defects: int) -> str:
        rates = [f"{100 * alarms[a] / normals:.1f}% ({alarms[a]}/{normals}) / {100 * hits[a] / defects:.1f}%" for a in THRESHOLD_ARMS]
        return f"| {name} | {100 * auroc[ARMS[0]]:.2f} | {100 * auroc[ARMS[1]]:.2f} | {100 * auroc['patch']:.2f} | " + " | ".join(rates) + " |"

    for name, found in results.items():
        lines.append(row(name, {a: float(np.mean(v)) for a, v in found.auroc.items()}, found.false_alarms, found.detected, found.normals, found.defects))
    if len(results) > 1:
        mean = {a: float(np.mean([np.mean(f.auroc[a]) for f in results.values()])) for a in (*ARMS, "patch")}
        pooled = [{a: sum(getattr(f, kind)[a] for f in results.values()) for a in THRESHOLD_ARMS} for kind in ("false_alarms", "detected")]
        lines.append(row("**all**", mean, *pooled, sum(f.normals for f in results.values()), sum(f.defects for f in results.values())))
    return "\n".join(lines)


def run_views_bench(
    checkpoint: Path, dataset: str, root: Path, categories: list[str] | None, shots: int, seeds: int, target_fpr: float
) -> str:
    inputs = bench_inputs(checkpoint, dataset, root, categories, shots, seeds)
    results = {c.category: ablate_category(inputs.detector, c, target_fpr, inputs.size) for c in inputs.categories}
    return render(results, target_fpr)
