"""Coreset search for large banks (model/coreset.py): exact below the budget, faithful above it."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from model.coreset import greedy_coreset, reduce_references
from model.neighbours import TorchPatchSearch, create_patch_search


def _unit(*shape: int, seed: int = 0) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_below_budget_the_search_is_exact():
    references, queries = _unit(2, 300, 32), _unit(3, 2, 50, 32, seed=1)
    exact = TorchPatchSearch(references).max_cosine(queries)
    assert torch.equal(create_patch_search(references, "torch", 64, max_references=300).max_cosine(queries), exact)


def test_coreset_of_repeated_patches_keeps_every_distinct_one():
    # 12 distinct patches, each repeated 50 times: a k-centre coreset of 12 must pick each exactly once.
    distinct = _unit(12, 64, seed=2)
    references = distinct.repeat(50, 1)[torch.randperm(600, generator=torch.Generator().manual_seed(3))]
    chosen = references[greedy_coreset(references, 12)]
    assert torch.allclose((chosen @ distinct.T).amax(dim=0), torch.ones(12), atol=1e-5)
    queries = _unit(2, 1, 40, 64, seed=4)
    exact = TorchPatchSearch(references[None]).max_cosine(queries)
    reduced = create_patch_search(references[None], "faiss", 64, max_references=12).max_cosine(queries)
    assert torch.allclose(reduced, exact, atol=1e-5)


def test_coreset_is_deterministic_per_layer_and_within_budget():
    references = _unit(3, 1000, 48, seed=5)
    first, second = reduce_references(references, 128), reduce_references(references, 128)
    assert first.shape == (3, 128, 48) and torch.equal(first, second)
    # Each layer keeps its own rows: every selected row is a row of that layer.
    for layer in range(3):
        assert torch.allclose((first[layer] @ references[layer].T).amax(dim=1), torch.ones(128), atol=1e-5)


def test_coreset_cosine_is_a_lower_bound_close_to_exact():
    references, queries = _unit(1, 4000, 16, seed=6), _unit(4, 1, 100, 16, seed=7)
    exact = TorchPatchSearch(references).max_cosine(queries)
    reduced = create_patch_search(references, "torch", 4096, max_references=1000).max_cosine(queries)
    assert bool((reduced <= exact + 1e-6).all())
    random_subset = TorchPatchSearch(references[:, :1000]).max_cosine(queries)
    # Farthest-point selection covers the bank better than the same number of arbitrary patches.
    assert (exact - reduced).amax() < (exact - random_subset).amax()
