"""The torch and FAISS nearest-patch searches give the same cosines, residual maps and detections."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from model import InCTRLv2
from model.neighbours import FaissPatchSearch, TorchPatchSearch, create_patch_search, per_sample_max_cosine
from model.residuals import patch_residual


def unit(*shape: int, seed: int) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


@pytest.mark.parametrize("chunk_rows", [7, 150, 8192])  # 7 and 150 split the 3 * 50 query rows unevenly
def test_torch_and_faiss_give_the_same_cosines_and_residual_maps(chunk_rows: int) -> None:
    queries, references = unit(3, 2, 50, 16, seed=1), unit(2, 70, 16, seed=2)
    torch_cos = TorchPatchSearch(references, chunk_rows).max_cosine(queries)
    faiss_cos = FaissPatchSearch(references).max_cosine(queries)
    # Brute-force oracle: every query row against every reference row of its layer.
    brute = torch.einsum("blnw,lmw->blnm", queries, references).amax(dim=-1)
    assert torch_cos.shape == faiss_cos.shape == (3, 2, 50)
    torch.testing.assert_close(torch_cos, brute, atol=1e-5, rtol=0)
    torch.testing.assert_close(faiss_cos, brute, atol=1e-5, rtol=0)
    torch.testing.assert_close(patch_residual(torch_cos), patch_residual(faiss_cos), atol=1e-5, rtol=0)


def test_search_is_per_layer() -> None:
    # Layer 1's references hold the query exactly; layer 0's are orthogonal to it.
    query = torch.tensor([[[[1.0, 0.0]], [[1.0, 0.0]]]])  # (1, L=2, N=1, W=2)
    references = torch.tensor([[[0.0, 1.0]], [[1.0, 0.0]]])  # (L=2, M=1, W=2)
    for search in (TorchPatchSearch(references), FaissPatchSearch(references)):
        torch.testing.assert_close(search.max_cosine(query), torch.tensor([[[0.0], [1.0]]]))


def test_per_sample_search_uses_each_querys_own_prompts() -> None:
    queries, references = unit(2, 2, 10, 8, seed=3), unit(2, 2, 12, 8, seed=4)
    per_sample = per_sample_max_cosine(queries * 3.0, references * 0.5)  # normalises its inputs itself
    for b in range(2):
        torch.testing.assert_close(per_sample[b], TorchPatchSearch(references[b]).max_cosine(queries[b : b + 1])[0])


def test_unknown_backend_is_named() -> None:
    with pytest.raises(ValueError, match="'annoy'"):
        create_patch_search(unit(1, 4, 2, seed=0), "annoy", 8)


def test_detector_with_torch_and_faiss_backends_agrees(tiny_detector: InCTRLv2, make_images) -> None:
    faiss_detector = InCTRLv2(tiny_detector.config.model_copy(update={"nn_backend": "faiss"}), device="cpu")
    faiss_detector.heads.load_state_dict(tiny_detector.heads.state_dict())
    torch_small_chunks = InCTRLv2(tiny_detector.config.model_copy(update={"nn_chunk_rows": 5}), device="cpu")
    torch_small_chunks.heads.load_state_dict(tiny_detector.heads.state_dict())
    bank = tiny_detector.build_prompt_bank(make_images(3, 64, seed=30), "capsule")
    images = make_images(4, 64, seed=31)
    expected = tiny_detector.detect(images, bank)
    for other in (faiss_detector, torch_small_chunks):
        actual = other.detect(images, bank)
        for name in ("scores", "maps", "patch_scores", "image_scores"):
            torch.testing.assert_close(getattr(actual, name), getattr(expected, name), atol=1e-5, rtol=0)
