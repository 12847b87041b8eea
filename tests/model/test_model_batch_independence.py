"""A score and a map must not depend on what else is in the batch, for every backbone."""
from __future__ import annotations

import pytest
import torch

from model import Detection, InCTRLv2, InCTRLv2Config

ATOL = 1e-5


def rows(detection: Detection, index: int) -> Detection:
    """The one-image Detection at ``index`` of a batch."""
    pick = slice(index, index + 1)
    text = None if detection.text_scores is None else detection.text_scores[pick]
    return Detection(
        detection.scores[pick], detection.maps[pick], detection.image_scores[pick], text, detection.patch_scores[pick]
    )


def assert_same_detection(actual: Detection, expected: Detection) -> None:
    for name in ("scores", "maps", "image_scores", "patch_scores", "text_scores"):
        a, e = getattr(actual, name), getattr(expected, name)
        if e is None:
            assert a is None, name
        else:
            torch.testing.assert_close(a, e, atol=ATOL, rtol=0, msg=lambda m, name=name: f"{name}: {m}")


def check_batch_independence(detector: InCTRLv2, make_images) -> None:
    size = detector.backbone.image_size
    bank = detector.build_prompt_bank(make_images(1, size, seed=10), "capsule")
    images = make_images(3, size, seed=11)
    batched = detector.detect(images, bank)
    assert batched.scores.shape == (3,) and batched.maps.shape == (3, size, size)
    # Distinct images must get distinct scores, or "identical alone and in a batch" proves nothing.
    assert batched.patch_scores.unique().numel() == 3
    alone = [detector.detect(images[index : index + 1], bank) for index in (0, 2)]
    assert_same_detection(rows(batched, 0), alone[0])
    assert_same_detection(rows(batched, 2), alone[1])
    # Reversed order: each image keeps its own result at its new position.
    reversed_batch = detector.detect(images.flip(0), bank)
    assert_same_detection(rows(reversed_batch, 2), alone[0])
    assert_same_detection(rows(reversed_batch, 0), alone[1])


def test_tiny_openclip_is_batch_independent(tiny_detector: InCTRLv2, make_images) -> None:
    check_batch_independence(tiny_detector, make_images)


def test_efficientnet_lite0_is_batch_independent(effnet_detector: InCTRLv2, make_images) -> None:
    check_batch_independence(effnet_detector, make_images)


@pytest.mark.slow
def test_default_vit_b_16_plus_240_architecture_is_batch_independent(make_images) -> None:
    # Random weights: the architecture and the 3-layer x batch layout are what is under test.
    detector = InCTRLv2(InCTRLv2Config(pretrained=None), device="cpu")
    assert detector.backbone.grid == (15, 15) and detector.backbone.image_size == 240
    check_batch_independence(detector, make_images)


def test_mixed_domain_encode_then_per_domain_score_equals_detect(tiny_detector: InCTRLv2, make_images) -> None:
    """The serving path: one backbone pass over frames of all domains, then each group against its bank."""
    capsule = tiny_detector.build_prompt_bank(make_images(2, 64, seed=20), "capsule")
    fabric = tiny_detector.build_prompt_bank(make_images(1, 64, seed=21), "fabric")
    frames = make_images(5, 64, seed=22)
    domains = [capsule, fabric, capsule, fabric, fabric]
    embedding, patches = tiny_detector.encode(frames)
    for bank in (capsule, fabric):
        picked = [i for i, d in enumerate(domains) if d is bank]
        scored = tiny_detector.score(embedding[picked], patches[picked], bank, size=(64, 64))
        assert_same_detection(scored, tiny_detector.detect(frames[picked], bank))
    # A different bank gives a different score for the same frame: the bank is really used.
    assert not torch.allclose(
        tiny_detector.detect(frames[:1], capsule).scores, tiny_detector.detect(frames[:1], fabric).scores
    )
