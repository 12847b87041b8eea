"""Detectors shared by the model tests: built once per session, never trained or mutated by a test."""
from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from model import InCTRLv2, InCTRLv2Config
from model.config import FusionConfig

ImageFactory = Callable[..., torch.Tensor]


def seeded_detector(config: InCTRLv2Config) -> InCTRLv2:
    """Heads draw from the global RNG; seed them in a forked RNG so every run sees the same detector."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1234)
        return InCTRLv2(config, device="cpu")


@pytest.fixture(scope="session")
def tiny_detector() -> InCTRLv2:
    return seeded_detector(InCTRLv2Config(backbone="tiny", pretrained=None))


@pytest.fixture(scope="session")
def standardised_tiny() -> InCTRLv2:
    """The tiny CLIP (text tower: "auto" would pick the paper) forced onto the standardised fusion."""
    return seeded_detector(InCTRLv2Config(backbone="tiny", pretrained=None, fusion=FusionConfig(image="standardised")))


@pytest.fixture(scope="session")
def effnet_detector() -> InCTRLv2:
    return seeded_detector(InCTRLv2Config(backbone="efficientnet-lite0", pretrained="imagenet"))


@pytest.fixture(scope="session")
def make_images() -> ImageFactory:
    """make_images(n, height, width=None, channels=3, seed=0) -> (n, C, H, W) uniform in [0, 1]."""

    def make(n: int, height: int, width: int | None = None, channels: int = 3, seed: int = 0) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        return torch.rand(n, channels, height, width or height, generator=generator)

    return make
