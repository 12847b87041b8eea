"""A new version's thresholds, from normal images only (model/calibration.py does the statistics)."""
from __future__ import annotations

import torch

from model import InCTRLv2, PromptBank
from model.calibration import DEFAULT_TARGET_FPR, CalibrationError, calibrate
from services.registry.records import RegistryError, ThresholdCalibration


def calibrate_threshold(
    detector: InCTRLv2,
    references: torch.Tensor,
    class_name: str,
    normals: torch.Tensor | None = None,
    target_fpr: float = DEFAULT_TARGET_FPR,
    defects: torch.Tensor | None = None,
    threshold: float | None = None,
) -> tuple[PromptBank, float, ThresholdCalibration]:
    """The domain's bank, the image threshold for `target_fpr` and the pixel calibration, from normal images
    only (a normal set when given, else leave-one-out over K >= 2 references; model/calibration.py). Defect
    images only measure the recall the threshold implies. A given `threshold` replaces the image threshold;
    the pixel calibration is still made when the images allow it (K >= 2 or a normal set)."""
    has_normals = normals is not None and len(normals) > 0
    if threshold is not None and not has_normals and len(references) < 2:
        return detector.build_prompt_bank(references, class_name), threshold, ThresholdCalibration(method="given")
    try:
        bank, found = calibrate(detector, references, class_name, normals, defects, target_fpr)
    except CalibrationError as error:
        raise RegistryError(f"{error}; give --threshold") from error
    chosen = found.threshold if threshold is None else threshold
    defect_scores = found.defect_scores
    calibration = ThresholdCalibration(
        method="given" if threshold is not None else found.method,
        normal_scores=found.normal_scores,
        view_scores=found.view_scores,
        target_fpr=found.target_fpr,
        pixel_threshold=found.pixel_threshold,
        map_range=found.map_range,
        normal_map_maxima=found.normal_map_maxima,
        defect_scores=defect_scores,
        recall=sum(s >= chosen for s in defect_scores) / len(defect_scores) if defect_scores else None,
    )
    return bank, chosen, calibration
