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
    assert torch.allclose(_draw(images, NuisanceViews(gain=0.0, shift=0.0, gradient=0.0)), images, atol=1e-5)


def test_exposure_stays_within_its_gain() -> None:
    grey = torch.full((200, 3, 8, 8), 0.5)
    views = _draw(grey, NuisanceViews(gain=0.1, shift=0.0, gradient=0.0))
    levels = views.mean(dim=(1, 2, 3))
    assert torch.allclose(views, levels[:, None, None, None].expand_as(views), atol=1e-6)  # one gain per view
    assert 0.45 - 1e-6 <= levels.min() < 0.46 and 0.54 < levels.max() <= 0.55 + 1e-6
    assert _draw(torch.ones(50, 1, 4, 4), NuisanceViews(gain=0.5)).max() <= 1.0  # clipped, as a camera saturates


def test_a_shift_moves_the_content_and_reflects_at_the_border() -> None:
    ramp = torch.linspace(0, 1, 64).expand(1, 1, 64, 64).repeat(100, 1, 1, 1)  # brighter to the right
    views = _draw(ramp, NuisanceViews(gain=0.0, shift=0.1, gradient=0.0))
    column_means = views.mean(dim=(0, 1, 2))
    assert not torch.allclose(views, ramp, atol=1e-3)
    moved = (views - ramp).abs().amax(dim=(1, 2, 3))
    assert moved.max() <= 0.2 + 0.05  # at most 10% of the side: 0.2 of a ramp spanning 1 over the side
    assert views.min() >= 0.0 and (column_means[1:] >= column_means[:-1] - 1e-3).sum() > 50  # still a ramp, no black margin


def test_a_gradient_lights_one_side_more_than_the_other_within_its_range() -> None:
    grey = torch.full((200, 1, 16, 16), 0.5)
    views = _draw(grey, NuisanceViews(gain=0.0, shift=0.0, gradient=0.1))[:, 0]
    # A plane through the centre's level: opposite corners average to it, and no pixel leaves 1 +- 0.1 sqrt(2).
    assert torch.allclose((views[:, 0, 0] + views[:, -1, -1]) / 2, torch.full((200,), 0.5), atol=1e-5)
    assert torch.allclose((views[:, 0, -1] + views[:, -1, 0]) / 2, torch.full((200,), 0.5), atol=1e-5)
    assert views.min() >= 0.5 * (1 - 0.1 * 2**0.5) - 1e-6 and views.max() <= 0.5 * (1 + 0.1 * 2**0.5) + 1e-6
    spans = views.amax(dim=(1, 2)) - views.amin(dim=(1, 2))
    assert (spans > 0.01).float().mean() > 0.8 and spans.max() > 0.1  # most views lit unevenly, some strongly


def test_a_gradient_changes_the_lighting_only_not_the_exposure_and_shift_drawn() -> None:
    """The gradient is drawn after exposure and shift: views of the same seed differ by a plane of light
    alone, and views without a gradient are the ones drawn before it existed."""
    images = 0.3 + 0.3 * torch.rand(50, 3, 32, 32, generator=torch.Generator().manual_seed(3))  # never clipped
    plain, lit = _draw(images, NuisanceViews(gain=0.15, shift=0.05, gradient=0.0)), _draw(images, NuisanceViews(gain=0.15, shift=0.05, gradient=0.1))
    ratio = lit / plain
    assert not torch.allclose(ratio, torch.ones_like(ratio), atol=1e-3)
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio), atol=1e-5)  # the same light on every channel
    assert torch.allclose((ratio[:, 0, 0, 0] + ratio[:, 0, -1, -1]) / 2, torch.ones(50), atol=1e-4)  # a plane through 1


@pytest.mark.parametrize("shots, expected", [(4, [0, 1, 2, 3, 0, 1]), (8, [0, 1, 2, 3, 4, 5]), (1, [0] * 6)])
def test_views_are_dealt_to_the_references_in_turn(shots: int, expected: list[int]) -> None:
    assert NuisanceViews(count=6).owners(shots) == expected
