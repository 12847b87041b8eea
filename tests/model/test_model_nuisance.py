"""Nuisance views of the references (model/nuisance.py): reproducible, within their ranges, borders reflected."""
from __future__ import annotations

import pytest
import torch

from model.nuisance import NuisanceViews, nuisance_views


def _draw(images: torch.Tensor, config: NuisanceViews, seed: int = 0) -> torch.Tensor:
    return nuisance_views(images, config, torch.Generator().manual_seed(seed))


def test_views_are_reproducible_and_differ_between_draws(make_images) -> None:
    images = make_images(4, 32, seed=1)
    config = NuisanceViews(gain=0.2, shift=0.1)
    assert torch.equal(_draw(images, config), _draw(images, config))
    assert not torch.allclose(_draw(images, config, seed=0), _draw(images, config, seed=1))


def test_a_view_that_may_not_move_is_its_image(make_images) -> None:
    images = make_images(3, 32, seed=2)
    assert torch.allclose(_draw(images, NuisanceViews(gain=0.0, shift=0.0)), images, atol=1e-5)


def test_exposure_stays_within_its_gain() -> None:
    grey = torch.full((200, 3, 8, 8), 0.5)
    views = _draw(grey, NuisanceViews(gain=0.1, shift=0.0))
    levels = views.mean(dim=(1, 2, 3))
    assert torch.allclose(views, levels[:, None, None, None].expand_as(views), atol=1e-6)  # one gain per view
    assert 0.45 - 1e-6 <= levels.min() < 0.46 and 0.54 < levels.max() <= 0.55 + 1e-6
    assert _draw(torch.ones(50, 1, 4, 4), NuisanceViews(gain=0.5)).max() <= 1.0  # clipped, as a camera saturates


def test_a_shift_moves_the_content_and_reflects_at_the_border() -> None:
    ramp = torch.linspace(0, 1, 64).expand(1, 1, 64, 64).repeat(100, 1, 1, 1)  # brighter to the right
    views = _draw(ramp, NuisanceViews(gain=0.0, shift=0.1))
    column_means = views.mean(dim=(0, 1, 2))
    assert not torch.allclose(views, ramp, atol=1e-3)
    moved = (views - ramp).abs().amax(dim=(1, 2, 3))
    assert moved.max() <= 0.2 + 0.05  # at most 10% of the side: 0.2 of a ramp spanning 1 over the side
    assert views.min() >= 0.0 and (column_means[1:] >= column_means[:-1] - 1e-3).sum() > 50  # still a ramp, no black margin


@pytest.mark.parametrize("shots, expected", [(4, [0, 1, 2, 3, 0, 1]), (8, [0, 1, 2, 3, 4, 5]), (1, [0] * 6)])
def test_views_are_dealt_to_the_references_in_turn(shots: int, expected: list[int]) -> None:
    assert NuisanceViews(count=6).owners(shots) == expected
