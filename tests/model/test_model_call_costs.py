"""Per-call costs removed from scoring (issue 9): what does not depend on the queries is computed once, and
the answers stay those of the straightforward computation."""
from __future__ import annotations

import torch

from model import InCTRLv2, InCTRLv2Config
from model.config import FusionConfig

from .conftest import seeded_detector


def _standardised() -> InCTRLv2:
    return seeded_detector(InCTRLv2Config(backbone="tiny", pretrained=None, fusion=FusionConfig(image="standardised")))


def test_reference_components_are_computed_once_per_bank_and_heads(make_images) -> None:
    det = _standardised()  # its own detector: the test changes its heads
    bank = det.build_prompt_bank(make_images(4, 64, seed=80), "widget")
    with torch.inference_mode():  # as scoring runs
        _check_kept_until_the_heads_change(det, bank)


def _check_kept_until_the_heads_change(det: InCTRLv2, bank) -> None:
    first = det.reference_components(bank)
    assert first is not None and det.reference_components(bank) is first  # kept, not recomputed
    fresh = det._reference_components(bank)
    for name, values in first.items():
        assert torch.equal(values, fresh[name]), name
    # New head weights (training, a checkpoint load) give new components, not the stale ones.
    det.heads.psi[0].weight.mul_(3.0)
    changed = det.reference_components(bank)
    assert changed is not first and not torch.equal(changed["image"], first["image"])
    assert torch.equal(changed["patch"], first["patch"])  # head-independent parts are the same values


def test_reference_components_in_training_mode_are_not_cached(make_images) -> None:
    det = _standardised()
    bank = det.build_prompt_bank(make_images(3, 64, seed=81), "widget")
    det.heads.train()
    try:
        with torch.inference_mode():
            assert det.reference_components(bank) is not det.reference_components(bank)
    finally:
        det.heads.eval()
    # Eval mode but gradients on (a kept graph would go stale): not kept either.
    assert det.reference_components(bank) is not det.reference_components(bank)


def test_search_skips_zero_padded_columns_and_stays_exact() -> None:
    from model.neighbours import FaissPatchSearch, TorchPatchSearch

    # Layers padded with zeros to a common width, as EfficientNet-Lite0's are; the queries are NOT zero
    # there, and the answer must still be the full-width cosine.
    generator = torch.Generator().manual_seed(5)
    references = torch.nn.functional.normalize(torch.randn(3, 70, 24, generator=generator), dim=-1)
    for layer, width in enumerate((8, 16)):
        references[layer, :, width:] = 0
    queries = torch.randn(2, 3, 9, 24, generator=generator)
    exact = torch.einsum("blnw,lmw->blnm", queries, references).amax(dim=-1)
    torch_search = TorchPatchSearch(references, chunk_rows=5)
    assert [t.shape[0] for t in torch_search.references_t] == [8, 16, 24]
    torch.testing.assert_close(torch_search.max_cosine(queries), exact, atol=1e-5, rtol=0)
    torch.testing.assert_close(FaissPatchSearch(references).max_cosine(queries), exact, atol=1e-5, rtol=0)


def test_grid_operator_equals_upsampling_then_blurring() -> None:
    from model.fusion import gaussian_blur, upsample
    from model.grid_maps import GridToImage

    generator = torch.Generator().manual_seed(6)
    for grid, size, sigma in (((15, 15), 240, 4.0), ((14, 14), 224, None), ((3, 5), 20, 4.0), ((4, 4), 32, 1.5)):
        maps = torch.rand(3, grid[0] * grid[1], generator=generator)
        expected = upsample(maps, grid, size)
        if sigma is not None:  # sigma 4 on 20 px: the blur's replicate-padding branch
            expected = gaussian_blur(expected, sigma)
        torch.testing.assert_close(GridToImage(grid, size, sigma)(maps), expected, atol=1e-6, rtol=0)


def test_detector_maps_are_those_of_eq_17_with_the_blur(tiny_detector: InCTRLv2, make_images) -> None:
    from model.fusion import fused_map, gaussian_blur

    det = tiny_detector
    bank = det.build_prompt_bank(make_images(2, 64, seed=82), "widget")
    embedding, patches = det.encode(make_images(3, 64, seed=83))
    outputs = det.head_outputs(embedding, patches, bank)
    _, maps = det.fuse(outputs, embedding, patches, bank)
    b = det.backbone
    expected = gaussian_blur(fused_map(outputs, b.grid, b.image_size, det.config.beta), det.config.blur_sigma).clamp(0, 1)
    torch.testing.assert_close(maps, expected, atol=1e-6, rtol=0)


def test_kept_prompt_prototype_follows_the_heads(make_images) -> None:
    det = _standardised()
    bank = det.build_prompt_bank(make_images(3, 64, seed=84), "widget")
    embedding, patches = det.encode(make_images(2, 64, seed=85))

    def image_scores_without_kept_values() -> torch.Tensor:
        with torch.no_grad():  # gradients "on" path off, nothing kept: the straightforward computation
            max_cosine = bank.search("torch", 8192, None).max_cosine(torch.nn.functional.normalize(patches, dim=-1))
            return det.heads(embedding, patches, max_cosine, bank.embeddings[None], bank.text[None], None, 0.07).image_score

    with torch.inference_mode():
        first = det.head_outputs(embedding, patches, bank).image_score
        torch.testing.assert_close(first, image_scores_without_kept_values(), atol=1e-6, rtol=0)
        det.heads.psi[2].weight.mul_(-2.0)
        second = det.head_outputs(embedding, patches, bank).image_score
    assert not torch.allclose(first, second)
    torch.testing.assert_close(second, image_scores_without_kept_values(), atol=1e-6, rtol=0)
