"""The gated standardised fusion: extras within the gate leave the patch ranking untouched, extras far
outside it are added; constructed components, no backbone."""
from __future__ import annotations

import pytest
import torch
from sklearn.metrics import roc_auc_score

from model.config import FusionConfig
from model.fusion import StandardisedFusion, create_image_fusion

WEIGHTS = {"patch": 1.0, "image": 0.5, "global": 0.5}


def _components(seed: int, global_shift: float) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor]:
    """'patch' weakly separates the anomalies; 'image' is noise; 'global' moves the anomalies by `global_shift`
    normal spreads. References are normal draws of every component (std 1 around 10)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.tensor([0] * 50 + [1] * 50)
    patch = 10 + torch.randn(100, generator=g) + 0.8 * labels
    image = 10 + torch.randn(100, generator=g)
    global_ = 10 + 0.5 * torch.randn(100, generator=g) + global_shift * labels
    references = {name: 10 + torch.randn(8, generator=g) for name in WEIGHTS}
    return {"patch": patch, "image": image, "global": global_}, references, labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_extras_within_the_gate_rank_exactly_as_the_patch_score(seed: int) -> None:
    components, references, labels = _components(seed, global_shift=0.0)
    gated = StandardisedFusion(WEIGHTS, floor=0.0, temperature=4.0, gate=6.0)(components, references)
    ungated = StandardisedFusion(WEIGHTS, floor=0.0, temperature=4.0)(components, references)
    patch_auroc = roc_auc_score(labels, components["patch"])
    assert roc_auc_score(labels, gated) == pytest.approx(patch_auroc, abs=1e-12)
    assert torch.equal(torch.argsort(gated), torch.argsort(components["patch"]))
    assert roc_auc_score(labels, ungated) < patch_auroc  # the noise the gate keeps out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_an_extra_far_outside_the_gate_lifts_the_anomalies(seed: int) -> None:
    components, references, labels = _components(seed, global_shift=20.0)
    gated = StandardisedFusion(WEIGHTS, floor=0.0, temperature=4.0, gate=6.0)(components, references)
    assert roc_auc_score(labels, gated) > roc_auc_score(labels, components["patch"]) + 0.1
    assert ((0 < gated) & (gated <= 1)).all()


def test_gate_reaches_the_fusion_from_the_config_and_must_not_be_negative() -> None:
    fusion = create_image_fusion(FusionConfig(image="standardised", gate=3.0), alpha=0.5, has_text=False)
    assert isinstance(fusion, StandardisedFusion) and fusion.gate == 3.0
    with pytest.raises(ValueError, match="gate"):
        FusionConfig(gate=-1.0)
