"""Bad input is refused with a message naming the problem; gray, RGBA and non-square input are handled."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from model import InCTRLv2, InCTRLv2Config, InvalidImageError, PromptBank, PromptBankError
from model.preprocess import Preprocessor, restore_geometry


@pytest.fixture(scope="module")
def capsule_bank(tiny_detector: InCTRLv2, make_images) -> PromptBank:
    return tiny_detector.build_prompt_bank(make_images(2, 64, seed=50), "capsule")


def with_nan(images: torch.Tensor) -> torch.Tensor:
    images = images.clone()
    images[0, 1, 3, 4] = float("nan")
    return images


BAD_IMAGES = {
    "rank-3": (lambda m: m(1, 64)[0], r"shape \(B, C, H, W\), got \(3, 64, 64\)"),
    "rank-5": (lambda m: m(1, 64)[None], r"shape \(B, C, H, W\)"),
    "empty-batch": (lambda m: m(1, 64)[:0], "empty"),
    "zero-height": (lambda m: torch.zeros(1, 3, 0, 64), "zero size 0x64"),
    "zero-width": (lambda m: torch.zeros(1, 3, 64, 0), "zero size 64x0"),
    "two-channels": (lambda m: m(1, 64, channels=2), "channels, got 2"),
    "five-channels": (lambda m: m(1, 64, channels=5), "channels, got 5"),
    "nan": (lambda m: with_nan(m(2, 64)), "NaN"),
    "inf": (lambda m: m(1, 64) / 0.0, "NaN or infinite"),
    "above-one": (lambda m: m(1, 64) * 255, r"\[0, 1\]"),
    "negative": (lambda m: m(1, 64) - 0.5, r"\[0, 1\]"),
    "uint8": (lambda m: (m(1, 64) * 255).to(torch.uint8), "float"),
    "numpy": (lambda m: m(1, 64).numpy(), "torch.Tensor, got ndarray"),
}


@pytest.mark.parametrize("case", BAD_IMAGES.keys())
def test_detect_refuses_bad_images(tiny_detector: InCTRLv2, capsule_bank: PromptBank, make_images, case: str) -> None:
    build, named = BAD_IMAGES[case]
    with pytest.raises(InvalidImageError, match=named):
        tiny_detector.detect(build(make_images), capsule_bank)


@pytest.mark.parametrize("case", ["nan", "above-one", "two-channels", "rank-3"])
def test_prompt_bank_refuses_bad_normals(tiny_detector: InCTRLv2, make_images, case: str) -> None:
    build, named = BAD_IMAGES[case]
    with pytest.raises(InvalidImageError, match=named) as info:
        tiny_detector.build_prompt_bank(build(make_images), "capsule")
    assert "normals" in str(info.value)


def test_empty_prompt_set_is_refused(tiny_detector: InCTRLv2) -> None:
    with pytest.raises(InvalidImageError, match="prompt set is empty"):
        tiny_detector.build_prompt_bank(torch.zeros(0, 3, 64, 64), "capsule")


def test_bank_from_another_backbone_is_refused(
    tiny_detector: InCTRLv2, effnet_detector: InCTRLv2, capsule_bank: PromptBank, make_images
) -> None:
    foreign = effnet_detector.build_prompt_bank(make_images(1, 64, seed=51), "capsule")
    with pytest.raises(PromptBankError, match="efficientnet-lite0.*inctrl-tiny"):
        tiny_detector.detect(make_images(1, 64), foreign)
    reseeded = InCTRLv2(InCTRLv2Config(backbone="tiny", pretrained=None, seed=1), device="cpu")
    with pytest.raises(PromptBankError, match="random-seed0.*random-seed1"):
        reseeded.detect(make_images(1, 64), capsule_bank)
    other_layers = InCTRLv2(InCTRLv2Config(backbone="tiny", pretrained=None, layers=(0, 3)), device="cpu")
    with pytest.raises(PromptBankError, match="layers=1,2,3.*layers=0,3"):
        other_layers.detect(make_images(1, 64), capsule_bank)


def test_values_within_rounding_of_the_range_are_accepted(tiny_detector: InCTRLv2, capsule_bank, make_images) -> None:
    images = make_images(1, 64)
    images[0, 0, 0, 0], images[0, 0, 0, 1] = -1e-4, 1 + 1e-4
    assert tiny_detector.detect(images, capsule_bank).scores.shape == (1,)


def test_gray_and_rgba_score_like_the_rgb_they_stand_for(tiny_detector, capsule_bank, make_images) -> None:
    gray = make_images(2, 64, channels=1, seed=52)
    rgb = tiny_detector.detect(gray.expand(-1, 3, -1, -1).contiguous(), capsule_bank)
    from_gray = tiny_detector.detect(gray, capsule_bank)
    rgba = torch.cat([gray.expand(-1, 3, -1, -1), make_images(2, 64, channels=1, seed=53)], dim=1)
    from_rgba = tiny_detector.detect(rgba, capsule_bank)
    for name in ("scores", "maps", "patch_scores"):
        torch.testing.assert_close(getattr(from_gray, name), getattr(rgb, name))
        torch.testing.assert_close(getattr(from_rgba, name), getattr(rgb, name))


@pytest.mark.parametrize(("height", "width"), [(48, 96), (100, 64), (64, 64), (200, 120)])
def test_maps_come_back_at_the_input_size(tiny_detector, capsule_bank, make_images, height: int, width: int) -> None:
    out = tiny_detector.detect(make_images(2, height, width), capsule_bank)
    assert out.maps.shape == (2, height, width)
    assert out.scores.shape == (2,)
    assert float(out.maps.min()) >= 0.0 and float(out.maps.max()) <= 1.0
    assert float(out.scores.min()) >= 0.0 and float(out.scores.max()) <= 1.0


def centroid(map2d: torch.Tensor) -> tuple[float, float]:
    weights = map2d.double().numpy()
    rows, cols = np.indices(weights.shape)
    return float((rows * weights).sum() / weights.sum()), float((cols * weights).sum() / weights.sum())


@pytest.mark.parametrize(("height", "width"), [(96, 160), (160, 96), (64, 64), (30, 50)])
def test_region_of_the_crop_lands_on_the_same_region_of_the_original(height: int, width: int) -> None:
    """A bright square in the original -> preprocess -> its crop-space brightness as a map -> back to the
    original size: the map's mass sits where the square was."""
    side = min(height, width) // 6
    top, left = height // 2 - side, width // 2 + side // 2  # off-centre, inside the central crop
    image = torch.zeros(1, 1, height, width)
    image[..., top : top + side, left : left + side] = 1.0
    preprocess = Preprocessor(64, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    crop_map = preprocess(image)[:, 0]  # (1, 64, 64): the square as the model sees it
    restored = restore_geometry(crop_map, height, width)[0]
    assert restored.shape == (height, width)
    expected = (top + (side - 1) / 2, left + (side - 1) / 2)
    assert centroid(restored) == pytest.approx(expected, abs=1.0)
    inside = restored[top : top + side, left : left + side].mean()
    assert inside > 0.5 and restored.sum() - restored[top : top + side, left : left + side].sum() < 0.5 * side * side


def test_restore_geometry_by_hand() -> None:
    # Crop 2x2 -> original 4x8: central 4x4 square (columns 2..5), margins replicate the edge column.
    crop = torch.tensor([[[0.0, 1.0], [0.0, 1.0]]])
    restored = restore_geometry(crop, 4, 8)[0]
    torch.testing.assert_close(restored[:, :2], torch.zeros(4, 2))
    torch.testing.assert_close(restored[:, 6:], torch.ones(4, 2))
    torch.testing.assert_close(restored[0, 2:6], torch.tensor([0.0, 0.25, 0.75, 1.0]))


@pytest.mark.parametrize("backbone", ["tiny", "efficientnet-lite0"])
def test_input_size_from_the_name_is_the_built_backbones(backbone: str) -> None:
    from model import InCTRLv2Config
    from model.backbones import input_size

    pretrained = "imagenet" if backbone == "efficientnet-lite0" else None
    assert input_size(backbone) == InCTRLv2(InCTRLv2Config(backbone=backbone, pretrained=pretrained), device="cpu").backbone.image_size
    assert input_size("ViT-B-16-plus-240") == 240 and input_size("ViT-L-14-336") == 336
    with pytest.raises(ValueError, match="unknown backbone"):
        input_size("no-such-backbone")
