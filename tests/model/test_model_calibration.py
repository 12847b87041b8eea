"""Per-domain calibration (model/calibration.py): leave-one-out from one encode, the target-FPR threshold
rule, and the thresholds it gives on a real backbone and a synthetic product."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from model import InCTRLv2
from model.calibration import (
    SPREAD_FLOOR_STEPS,
    CalibrationError,
    calibrate,
    fpr_threshold,
    leave_one_out,
    min_logit_spread,
    student_t_cdf,
    student_t_quantile,
)
from model.nuisance import NuisanceViews
from pipelines.synth.generator import defect_example, image_rng, render_normal
from pipelines.synth.defects import to_uint8


def _normals(domain: str, count: int, size: int, stream: str = "train", offset: int = 0) -> torch.Tensor:
    images = [to_uint8(render_normal(domain, size, image_rng(0, domain, stream, offset + i)).image) for i in range(count)]
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0


def _defects(domain: str, count: int, size: int) -> torch.Tensor:
    images = [defect_example(domain, "foreign_texture", 0, i, size)[1] for i in range(count)]
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0


@pytest.mark.parametrize("n", [40, 4, 2])
def test_threshold_rule_meets_its_false_positive_rate(n: int) -> None:
    """Calibrate on n normals, test on a fresh normal: over many domains, a fresh normal exceeds the
    threshold at the target rate, also with n = 4 (the normal quantile let twice as many through there)."""
    low, high = 0.04, 0.06  # 5% +- 3 binomial std over 4000 trials
    rng = np.random.default_rng(7)
    trials, target = 4000, 0.05
    exceeded = 0
    for _ in range(trials):
        centre, spread = rng.uniform(-3, 1), rng.uniform(0.1, 1.0)
        logits = rng.normal(centre, spread, n + 1)
        values = (1 / (1 + np.exp(-logits))).tolist()
        exceeded += values[-1] >= fpr_threshold(values[:-1], target)
    assert low <= exceeded / trials <= high


def test_student_t_quantiles_match_the_printed_tables() -> None:
    # Student's t table (one-sided 0.99 / 0.95) for dof 1, 3, 10, and the large-dof normal limit.
    for dof, q99, q95 in [(1, 31.821, 6.314), (3, 4.541, 2.353), (10, 2.764, 1.812), (2000, 2.328, 1.646)]:
        assert student_t_quantile(0.99, dof) == pytest.approx(q99, abs=1e-3)
        assert student_t_quantile(0.95, dof) == pytest.approx(q95, abs=1e-3)
    assert student_t_cdf(0.0, 4) == pytest.approx(0.5) and student_t_cdf(-2.132, 4) == pytest.approx(0.05, abs=1e-4)


def test_threshold_rule_refuses_what_it_cannot_do() -> None:
    with pytest.raises(CalibrationError, match="at least 2 normal values"):
        fpr_threshold([0.3], 0.01)
    with pytest.raises(CalibrationError, match="target false-positive rate"):
        fpr_threshold([0.3, 0.4], 0.7)
    assert 0.0 < fpr_threshold([0.2, 0.2, 0.2], 0.01) < 0.21  # identical values: a narrow bound, not a crash


def test_leave_one_out_encodes_the_references_once_and_matches_rebuilt_banks(tiny_detector: InCTRLv2, make_images) -> None:
    references = make_images(5, 64, seed=3)
    calls: list[int] = []
    original = tiny_detector.encode

    def counting(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        calls.append(len(images))
        return original(images)

    tiny_detector.encode = counting  # type: ignore[method-assign]
    try:
        found = leave_one_out(tiny_detector, references, "widget", NuisanceViews(count=0))
    finally:
        del tiny_detector.encode
    assert calls == [5]  # K images encoded once, not K banks of K - 1
    assert found.bank.shots == 5 and found.scores.shape == (5,) and found.maps.shape == (5, 64, 64)
    assert found.view_scores.shape == (0,)
    for i in (0, 3):
        others = torch.cat([references[:i], references[i + 1 :]])
        expected = tiny_detector.detect(references[i : i + 1], tiny_detector.build_prompt_bank(others, "widget"))
        assert found.scores[i].item() == pytest.approx(expected.scores[0].item(), abs=1e-5)
        assert torch.allclose(found.maps[i], expected.maps[0], atol=1e-5)


def test_each_view_is_scored_against_the_bank_without_its_own_reference(tiny_detector: InCTRLv2, make_images) -> None:
    """Views that do not move are their references: scored against the OTHER references they must give
    exactly the leave-one-out scores (against a bank holding their own reference they would score ~0)."""
    references = make_images(3, 64, seed=5)
    still = NuisanceViews(count=7, gain=0.0, shift=0.0)
    found = leave_one_out(tiny_detector, references, "widget", still)
    assert found.view_scores.shape == (7,)
    owners = still.owners(3)
    assert owners == [0, 1, 2, 0, 1, 2, 0]
    assert torch.allclose(found.view_scores, found.scores[owners], atol=1e-5)


def test_leave_one_out_needs_two_references(tiny_detector: InCTRLv2, make_images) -> None:
    with pytest.raises(CalibrationError, match="at least 2 reference images"):
        calibrate(tiny_detector, make_images(1, 64), "widget")


def test_calibrated_thresholds_hold_on_held_out_normals_of_a_synthetic_product(effnet_detector: InCTRLv2) -> None:
    """K = 8 references of a product; its unseen normals stay under both thresholds (1% target) and the
    pixel threshold sits inside the display range. (With K = 4 some draws of references are too alike:
    their leave-one-out spread understates the spread of new normals; see the calibration notes.)"""
    size = effnet_detector.backbone.image_size
    references = _normals("capsule", 8, size)
    held_out = _normals("capsule", 24, size, stream="test_good")
    defects = _defects("capsule", 6, size)
    bank, found = calibrate(effnet_detector, references, "capsule", defects=defects)
    assert found.method == "leave-one-out" and bank.shots == 8
    assert len(found.normal_scores) == 8 + NuisanceViews().count and found.view_scores == NuisanceViews().count
    detection = effnet_detector.detect(held_out, bank)
    false_alarms = int((detection.scores >= found.threshold).sum())
    assert false_alarms <= 1, (false_alarms, found.threshold, detection.scores.tolist())
    noisy_maps = int((detection.maps.flatten(1).amax(1) >= found.pixel_threshold).sum())
    assert noisy_maps <= 1
    low, high = found.map_range
    assert low < found.pixel_threshold < high
    assert found.recall is not None and len(found.defect_scores) == 6
    assert found.recall == pytest.approx(np.mean([s >= found.threshold for s in found.defect_scores]))


def test_too_alike_references_cannot_shrink_the_threshold_to_their_own_scores(
    effnet_detector: InCTRLv2, tiny_detector: InCTRLv2
) -> None:
    """Nearly equal leave-one-out scores (four very alike references) would give a bound on top of the scores
    themselves (pcb on held-out training domains: FPR 20.8%). Under the standardised fusion the logit spread
    is floored at half the step one LOO spread of max M_x makes in the fused logit; not under Eq 9 or K = 1."""
    fusion = effnet_detector.config.fusion
    step = fusion.weights["patch"] / (fusion.temperature * sum(w for name, w in fusion.weights.items() if name != "text"))
    floor = min_logit_spread(effnet_detector, 4)
    assert floor == pytest.approx(SPREAD_FLOOR_STEPS * step)
    assert min_logit_spread(effnet_detector, 1) < 0.01 and min_logit_spread(tiny_detector, 4) < 0.01
    q = student_t_quantile(0.99, 3) * (1 + 1 / 4) ** 0.5
    alike = fpr_threshold([0.5, 0.5, 0.5, 0.5], 0.01, floor)
    assert float(torch.logit(torch.tensor(alike, dtype=torch.float64))) == pytest.approx(q * floor)

    references = _normals("capsule", 4, effnet_detector.backbone.image_size)
    _, found = calibrate(effnet_detector, references, "capsule")
    assert found.threshold == pytest.approx(fpr_threshold(found.normal_scores, 0.01, floor))
    logits = torch.logit(torch.tensor(found.normal_scores, dtype=torch.float64))
    n = len(logits)  # the references' and their nuisance views' scores
    q_n = student_t_quantile(0.99, n - 1) * (1 + 1 / n) ** 0.5
    assert float(torch.logit(torch.tensor(found.threshold, dtype=torch.float64))) >= float(logits.mean()) + q_n * floor - 1e-9
