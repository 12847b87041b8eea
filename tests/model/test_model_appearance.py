"""The appearance distance a(x) (model/standardisation.py): the first moment of the unit patch tokens per layer,
by hand; blind to a local change that a global one moves; its exposure views' values against the other
references; stored with the bank and carried into subsets; the one-sided fusion that reads it."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from model import InCTRLv2, PromptBank, PromptBankError
from model.fusion import StandardisedFusion
from model.standardisation import appearance, appearance_distance, bank_appearance


def test_appearance_is_the_mean_unit_token_per_layer() -> None:
    patches = torch.randn(3, 2, 10, 6, generator=torch.Generator().manual_seed(0)) * 5
    torch.testing.assert_close(appearance(patches), F.normalize(patches, dim=-1).mean(dim=2))
    bank_rows = F.normalize(patches, dim=-1).transpose(0, 1).reshape(2, 30, 6)  # (L, K*N, W) as a bank stores them
    torch.testing.assert_close(bank_appearance(bank_rows, 3), appearance(patches))


def test_a_local_change_moves_the_appearance_far_less_than_a_global_one() -> None:
    generator = torch.Generator().manual_seed(1)
    reference = torch.randn(1, 3, 100, 16, generator=generator)
    local = reference.clone()
    local[0, :, 7] = torch.randn(3, 16, generator=generator) * 3  # one patch in a hundred, on every layer
    global_shift = reference + 0.5 * torch.randn(1, 3, 1, 16, generator=generator)  # every patch the same way
    references = appearance(reference)
    assert appearance_distance(references, references).abs().max() < 1e-6
    local_distance = appearance_distance(appearance(local), references).item()
    global_distance = appearance_distance(appearance(global_shift), references).item()
    assert global_distance > 10 * local_distance > 0


def test_exposure_views_add_normal_appearance_distances_against_the_other_references(
    standardised_tiny: InCTRLv2, make_images
) -> None:
    det = standardised_tiny
    references = make_images(3, 64, seed=90)
    bank = det.build_prompt_bank(references, "widget")
    views = det.config.fusion.global_views
    assert bank.view_appearance is not None
    assert bank.view_appearance.shape == (views.count, len(det.backbone.layers), det.backbone.patch_dim)
    distances = det.reference_components(bank)["appearance"]
    assert distances.shape == (3 + views.count,)
    mine = bank_appearance(bank.patches, 3)
    for j in (0, 5, views.count - 1):
        others = [k for k in range(3) if k != int(bank.view_owners[j])]
        expected = appearance_distance(bank.view_appearance[j : j + 1], mine[others])
        assert distances[3 + j].item() == pytest.approx(expected.item(), abs=1e-6)


def test_views_appearance_survives_bytes_follows_subsets_and_old_banks_still_score(standardised_tiny: InCTRLv2, make_images) -> None:
    det = standardised_tiny
    bank = det.build_prompt_bank(make_images(3, 64, seed=91), "widget")
    images = make_images(2, 64, seed=92)
    restored = PromptBank.from_bytes(bank.to_bytes())
    assert torch.equal(restored.view_appearance, bank.view_appearance)
    assert torch.equal(det.detect(images, restored).scores, det.detect(images, bank).scores)
    pair = bank.subset([2, 0])
    kept = (bank.view_owners == 2) | (bank.view_owners == 0)
    assert torch.equal(pair.view_appearance, bank.view_appearance[kept])
    # A bank written before the appearance distance: a standardised by leave-one-out alone, still scores.
    old = PromptBank(
        bank.class_name, bank.backbone_id, bank.embeddings, bank.patches, bank.text,
        view_embeddings=bank.view_embeddings, view_owners=bank.view_owners,
    )  # fmt: skip
    legacy = PromptBank.from_bytes(old.to_bytes())
    assert legacy.view_appearance is None
    assert det.reference_components(legacy)["appearance"].shape == (3,)
    assert det.detect(images, legacy).scores.shape == (2,)


def test_bank_with_misshapen_views_appearance_is_refused(standardised_tiny: InCTRLv2, make_images) -> None:
    from safetensors.torch import load, save

    data = standardised_tiny.build_prompt_bank(make_images(3, 64, seed=93), "widget").to_bytes()
    header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
    tensors = load(data)
    tensors["view_appearance"] = tensors["view_appearance"][:, :1].contiguous()
    with pytest.raises(PromptBankError, match="appearance"):
        PromptBank.from_bytes(save(tensors, header["__metadata__"]), source="bad.bank")


def test_one_sided_fusion_never_lets_an_unusually_normal_extra_lower_the_score() -> None:
    """gate 0: an extra below its normal mean (z < 0) adds nothing; above it, it adds its z."""
    references = {"patch": torch.tensor([0.1, 0.2, 0.3]), "appearance": torch.tensor([1.0, 2.0, 3.0])}
    weights = {"patch": 1.0, "appearance": 0.5}
    one_sided = StandardisedFusion(weights, floor=0.0, temperature=1.0, gate=0.0)
    patch = torch.tensor([0.25, 0.25, 0.25])
    scores = one_sided({"patch": patch, "appearance": torch.tensor([0.0, 2.0, 5.0])}, references)
    z_patch = (0.25 - 0.2) / 0.1
    expected = torch.sigmoid(torch.tensor([z_patch, z_patch, z_patch + 0.5 * 3.0]) / 1.5)
    torch.testing.assert_close(scores, expected)
    two_sided = StandardisedFusion(weights, floor=0.0, temperature=1.0)({"patch": patch, "appearance": torch.tensor([0.0, 2.0, 5.0])}, references)
    assert two_sided[0] < scores[0]  # ungated, the unusually normal appearance pulled the score down


def test_detector_computes_only_the_components_its_fusion_reads(tiny_detector: InCTRLv2, make_images) -> None:
    det = tiny_detector  # the paper's Eq 9: s_i, s_q, max M_x
    bank = det.build_prompt_bank(make_images(2, 64, seed=94), "widget")
    embedding, patches = det.encode(make_images(2, 64, seed=95))
    outputs = det.head_outputs(embedding, patches, bank)
    assert set(det.components(outputs, embedding, patches, bank, det.image_fusion.components)) == {"image", "text", "patch"}
    assert set(det.components(outputs, embedding, patches, bank)) == {"image", "text", "patch", "global", "appearance"}
