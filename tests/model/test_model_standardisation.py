"""Leave-one-out standardisation and the standardised fusion: statistics by hand, fusion behaviour on
constructed components, batch independence, and round trips through bank bytes and checkpoints."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from model import InCTRLv2, InCTRLv2Config, PromptBank, PromptBankError
from model.config import FusionConfig
from model.fusion import PaperFusion, StandardisedFusion, create_image_fusion
from model.standardisation import MAX_HELD_OUT, held_out, leave_one_out_max_cosine, standardise

from .conftest import seeded_detector


def test_leave_one_out_statistics_equal_scoring_each_reference_against_a_bank_of_the_others(
    standardised_tiny: InCTRLv2, make_images
) -> None:
    det = standardised_tiny
    references = make_images(4, 64, seed=70)
    bank = det.build_prompt_bank(references, "widget")
    loo = det.reference_components(bank)
    assert loo is not None and set(loo) == {"image", "text", "patch", "global", "appearance"}
    for k in range(4):
        others = det.build_prompt_bank(torch.cat([references[:k], references[k + 1 :]]), "widget")
        alone = det.detect(references[k : k + 1], others)
        embedding, patches = det.encode(references[k : k + 1])
        outputs = det.head_outputs(embedding, patches, others)
        assert loo["appearance"][k].item() == pytest.approx(det.components(outputs, embedding, patches, others)["appearance"].item(), abs=1e-5)
        cosines = F.normalize(embedding, dim=-1) @ F.normalize(others.embeddings, dim=-1).T
        assert loo["patch"][k].item() == pytest.approx(alone.patch_scores[0].item(), abs=1e-5)
        assert loo["image"][k].item() == pytest.approx(alone.image_scores[0].item(), abs=1e-5)
        assert loo["text"][k].item() == pytest.approx(alone.text_scores[0].item(), abs=1e-5)
        assert loo["global"][k].item() == pytest.approx(1 - cosines.max().item(), abs=1e-5)


def test_standardise_by_hand() -> None:
    reference = torch.tensor([1.0, 2.0, 3.0])  # mean 2, std (ddof 1) 1
    torch.testing.assert_close(standardise(torch.tensor([2.0, 4.0]), reference, floor=0.0), torch.tensor([0.0, 2.0]))
    # The floor takes over when the references barely differ: spread = 0.5 * |mean| = 1.
    tight = torch.tensor([2.0, 2.0, 2.0])
    torch.testing.assert_close(standardise(torch.tensor([3.0]), tight, floor=0.5), torch.tensor([1.0]))


def test_held_out_references_are_capped_and_spread() -> None:
    assert held_out(3).tolist() == [0, 1, 2]
    many = held_out(40)
    assert len(many) == MAX_HELD_OUT and many[0] == 0 and many[-1] == 39 and len(set(many.tolist())) == MAX_HELD_OUT
    patches = F.normalize(torch.randn(2, 40 * 5, 8, generator=torch.Generator().manual_seed(0)), dim=-1)
    assert leave_one_out_max_cosine(patches, 40).shape == (MAX_HELD_OUT, 2, 5)


def _constructed(seed: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor]:
    """Two components on very different scales: 'patch' separates anomalies, 'global' is noise only."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.tensor([0] * 40 + [1] * 40)
    patch = 0.05 + 0.005 * torch.randn(80, generator=g) + 0.05 * labels  # tiny scale, 10 normal stds apart
    noise = 5.0 + 0.5 * torch.randn(80, generator=g)  # large scale, uninformative
    references = {"patch": 0.05 + 0.005 * torch.randn(4, generator=g), "global": 5.0 + 0.5 * torch.randn(4, generator=g)}
    return {"patch": patch, "global": noise}, references, labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_standardised_fusion_keeps_the_informative_component_that_raw_scales_drown(seed: int) -> None:
    components, references, labels = _constructed(seed)
    fused = StandardisedFusion({"patch": 1.0, "global": 0.5}, floor=0.0, temperature=4.0)(components, references)
    raw_sum = components["patch"] + 0.5 * components["global"]
    best = roc_auc_score(labels, components["patch"])
    assert roc_auc_score(labels, fused) >= best - 0.02
    assert roc_auc_score(labels, raw_sum) < best - 0.1  # what standardisation is for
    assert ((0 < fused) & (fused < 1)).all()


def test_standardised_fusion_is_the_patch_score_without_references() -> None:
    components = {"patch": torch.tensor([0.1, 0.3]), "image": torch.tensor([0.9, 0.2]), "global": torch.tensor([0.4, 0.0])}
    fused = StandardisedFusion({"patch": 1.0, "image": 1.0}, floor=0.3, temperature=4.0)(components, None)
    torch.testing.assert_close(fused, components["patch"])


def test_auto_fusion_is_the_paper_with_a_text_tower_and_standardised_without(tiny_detector, effnet_detector) -> None:
    assert isinstance(tiny_detector.image_fusion, PaperFusion) and tiny_detector.map_fusion == "paper"
    assert isinstance(effnet_detector.image_fusion, StandardisedFusion) and effnet_detector.map_fusion == "patch"
    assert isinstance(create_image_fusion(FusionConfig(image="paper"), 0.5, has_text=False), PaperFusion)


def test_standardised_scores_do_not_depend_on_the_batch(standardised_tiny: InCTRLv2, make_images) -> None:
    det = standardised_tiny
    bank = det.build_prompt_bank(make_images(3, 64, seed=71), "widget")
    images = make_images(4, 64, seed=72)
    batched = det.detect(images, bank)
    for i in (0, 3):
        alone = det.detect(images[i : i + 1], bank)
        torch.testing.assert_close(batched.scores[i : i + 1], alone.scores, atol=1e-6, rtol=0)
        torch.testing.assert_close(batched.maps[i : i + 1], alone.maps, atol=1e-6, rtol=0)
    assert batched.scores.unique().numel() == 4


def test_bank_bytes_keep_the_leave_one_out_cosines_and_old_banks_still_score(standardised_tiny: InCTRLv2, make_images) -> None:
    det = standardised_tiny
    bank = det.build_prompt_bank(make_images(3, 64, seed=73), "widget")
    images = make_images(2, 64, seed=74)
    restored = PromptBank.from_bytes(bank.to_bytes())
    assert restored.loo_max_cosine is not None and torch.equal(restored.loo_max_cosine, bank.leave_one_out())
    assert torch.equal(det.detect(images, restored).scores, det.detect(images, bank).scores)
    # A bank written before the field existed: recomputed on first use, same scores.
    old = PromptBank(
        bank.class_name, bank.backbone_id, bank.embeddings, bank.patches, bank.text,
        view_embeddings=bank.view_embeddings, view_owners=bank.view_owners,
    )  # fmt: skip
    legacy = PromptBank.from_bytes(_without_loo(old.to_bytes()))
    assert legacy.loo_max_cosine is None
    torch.testing.assert_close(det.detect(images, legacy).scores, det.detect(images, bank).scores, atol=1e-6, rtol=0)


def _without_loo(data: bytes) -> bytes:
    from safetensors.torch import load, save

    tensors = load(data)
    del tensors["loo_max_cosine"]
    header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
    return save(tensors, header["__metadata__"])


def test_bank_with_misshapen_leave_one_out_cosines_is_refused(standardised_tiny: InCTRLv2, make_images) -> None:
    from safetensors.torch import load, save

    data = standardised_tiny.build_prompt_bank(make_images(3, 64, seed=75), "widget").to_bytes()
    tensors = load(data)
    tensors["loo_max_cosine"] = tensors["loo_max_cosine"][:2]
    header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
    with pytest.raises(PromptBankError, match="leave-one-out"):
        PromptBank.from_bytes(save(tensors, header["__metadata__"]), source="bad.bank")


def test_exposure_views_add_normal_global_distances_against_the_other_references(standardised_tiny: InCTRLv2, make_images) -> None:
    det = standardised_tiny
    references = make_images(3, 64, seed=78)
    bank = det.build_prompt_bank(references, "widget")
    views = det.config.fusion.global_views
    assert bank.view_embeddings is not None and bank.view_owners is not None
    assert bank.view_embeddings.shape == (views.count, det.backbone.embed_dim) and bank.view_owners.tolist() == views.owners(3)
    distances = det.reference_components(bank)["global"]
    assert distances.shape == (3 + views.count,)
    unit, references_unit = F.normalize(bank.view_embeddings, dim=-1), F.normalize(bank.embeddings, dim=-1)
    for j in (0, 4, views.count - 1):
        owner = int(bank.view_owners[j])
        others = [k for k in range(3) if k != owner]
        assert distances[3 + j].item() == pytest.approx(1 - (unit[j] @ references_unit[others].T).max().item(), abs=1e-5)
    # An exposure view is near its own reference, not a copy of it: against the others it is a normal value.
    assert not torch.allclose(bank.view_embeddings[0], bank.embeddings[0])
    rebuilt = det.build_prompt_bank(references, "widget")
    assert torch.equal(rebuilt.view_embeddings, bank.view_embeddings)  # the same references, the same views


def test_exposure_views_survive_bytes_and_follow_their_references_into_subsets(standardised_tiny: InCTRLv2, make_images) -> None:
    det = standardised_tiny
    bank = det.build_prompt_bank(make_images(3, 64, seed=79), "widget")
    restored = PromptBank.from_bytes(bank.to_bytes())
    assert torch.equal(restored.view_embeddings, bank.view_embeddings) and torch.equal(restored.view_owners, bank.view_owners)
    images = make_images(2, 64, seed=80)
    assert torch.equal(det.detect(images, restored).scores, det.detect(images, bank).scores)
    pair = bank.subset([2, 0])
    kept = (bank.view_owners == 2) | (bank.view_owners == 0)
    assert torch.equal(pair.view_embeddings, bank.view_embeddings[kept])
    assert pair.view_owners.tolist() == [0 if int(o) == 2 else 1 for o in bank.view_owners[kept]]
    assert det.build_prompt_bank(make_images(1, 64, seed=81), "widget").view_embeddings is None  # K = 1: nothing to standardise


def test_prompt_banks_under_the_paper_fusion_carry_no_views(tiny_detector: InCTRLv2, make_images) -> None:
    assert tiny_detector.build_prompt_bank(make_images(3, 64, seed=82), "widget").view_embeddings is None


def test_bank_with_misshapen_exposure_views_is_refused(standardised_tiny: InCTRLv2, make_images) -> None:
    from safetensors.torch import load, save

    data = standardised_tiny.build_prompt_bank(make_images(3, 64, seed=83), "widget").to_bytes()
    header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
    for change in ({"view_owners": torch.full((32,), 3, dtype=torch.long)}, {"view_embeddings": torch.zeros(32, 5)}, {"view_owners": None}):
        tensors = load(data)
        for name, value in change.items():
            if value is None:
                del tensors[name]
            else:
                tensors[name] = value
        with pytest.raises(PromptBankError, match="exposure views"):
            PromptBank.from_bytes(save(tensors, header["__metadata__"]), source="bad.bank")


def test_fusion_config_survives_a_checkpoint_and_old_configs_load_as_auto(
    standardised_tiny: InCTRLv2, tmp_path: Path, make_images
) -> None:
    directory = standardised_tiny.save(tmp_path / "ckpt")
    loaded = InCTRLv2.load(directory, device="cpu")
    assert loaded.config.fusion.image == "standardised" and isinstance(loaded.image_fusion, StandardisedFusion)
    bank = standardised_tiny.build_prompt_bank(make_images(3, 64, seed=76), "widget")
    images = make_images(2, 64, seed=77)
    assert torch.equal(loaded.detect(images, bank).scores, standardised_tiny.detect(images, bank).scores)
    document = json.loads((directory / "config.json").read_text())
    del document["config"]["fusion"]  # a checkpoint from before the fusion was configurable
    (directory / "config.json").write_text(json.dumps(document))
    old = InCTRLv2.load(directory, device="cpu")
    assert old.config.fusion == FusionConfig() and isinstance(old.image_fusion, PaperFusion)
