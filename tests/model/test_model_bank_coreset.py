"""Coreset indices live in the prompt bank: selected once at build, stored, restricted for subsets, checked on load."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load, save

from model import InCTRLv2, InCTRLv2Config, PromptBank, PromptBankError
from model.coreset import layer_coresets, select_rows
from model.neighbours import TorchPatchSearch

from .conftest import seeded_detector

BUDGET = 150  # tiny backbone: 64 patches per image, so K >= 3 is above the budget


@pytest.fixture(scope="module")
def small_budget() -> InCTRLv2:
    return seeded_detector(InCTRLv2Config(backbone="tiny", pretrained=None, nn_max_references=BUDGET))


@pytest.fixture(scope="module")
def big_bank(small_budget: InCTRLv2, make_images) -> PromptBank:
    return small_budget.build_prompt_bank(make_images(6, 64, seed=90), "bolt")


def _rewrite(data: bytes, edit) -> bytes:
    tensors = load(data)
    metadata = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])["__metadata__"]
    edit(tensors, metadata)
    return save(tensors, metadata)


def test_building_a_bank_above_the_budget_selects_its_coreset_once(small_budget: InCTRLv2, big_bank: PromptBank) -> None:
    n_layers, rows = big_bank.patches.shape[:2]
    assert rows > BUDGET and big_bank.coreset_budget == BUDGET
    assert big_bank.coreset is not None and big_bank.coreset.shape == (n_layers, BUDGET)
    assert torch.equal(big_bank.coreset, layer_coresets(big_bank.patches, BUDGET))
    # Below the budget there is nothing to select: exact search.
    assert small_budget.build_prompt_bank(torch.rand(2, 3, 64, 64), "bolt").coreset is None


def test_stored_coreset_is_what_the_search_uses(small_budget: InCTRLv2, big_bank: PromptBank, make_images) -> None:
    # Store a selection the greedy algorithm would never make (the last rows): the loaded bank must search
    # exactly those rows, so a replica reading the bank does not select again.
    rows = big_bank.patches.shape[1]
    last = torch.arange(rows - BUDGET, rows).expand(big_bank.patches.shape[0], -1).contiguous()
    data = _rewrite(big_bank.to_bytes(), lambda t, m: t.__setitem__("coreset", last))
    loaded = PromptBank.from_bytes(data, source="test")
    assert torch.equal(loaded.coreset, last)
    queries = F.normalize(torch.randn(2, big_bank.patches.shape[0], 16, big_bank.patches.shape[-1]), dim=-1)
    expected = TorchPatchSearch(big_bank.patches[:, -BUDGET:]).max_cosine(queries)
    assert torch.equal(loaded.search("torch", 8192, BUDGET).max_cosine(queries), expected)


def test_round_trip_keeps_the_coreset_and_the_scores(small_budget: InCTRLv2, big_bank: PromptBank, make_images) -> None:
    restored = PromptBank.from_bytes(big_bank.to_bytes())
    assert restored.coreset_budget == BUDGET and torch.equal(restored.coreset, big_bank.coreset)
    images = make_images(2, 64, seed=91)
    assert torch.equal(small_budget.detect(images, restored).maps, small_budget.detect(images, big_bank).maps)


def test_old_bank_without_coreset_loads_and_selects_it_on_first_use(small_budget: InCTRLv2, big_bank: PromptBank, make_images) -> None:
    def drop(tensors, metadata):
        del tensors["coreset"], metadata["coreset_budget"]

    legacy = PromptBank.from_bytes(_rewrite(big_bank.to_bytes(), drop), source="old.bank")
    assert legacy.coreset is None
    images = make_images(2, 64, seed=92)
    assert torch.equal(small_budget.detect(images, legacy).scores, small_budget.detect(images, big_bank).scores)
    assert torch.equal(legacy.coreset, big_bank.coreset)


def test_subset_keeps_the_selected_rows_of_its_prompts(big_bank: PromptBank) -> None:
    keep = [0, 2, 3, 5]
    sub = big_bank.subset(keep)
    n_layers, rows, _ = big_bank.patches.shape
    per_prompt = rows // big_bank.shots
    assert sub.coreset is not None and sub.coreset_budget == BUDGET and sub.coreset.shape[1] <= BUDGET
    for layer in range(n_layers):
        parent = big_bank.coreset[layer]
        expected = {int(r) for r in parent if int(r) // per_prompt in keep}
        chosen = {int(r) for r in sub.coreset[layer]}
        # The subset's rows are the parent's selected rows of the kept prompts, renumbered.
        assert {keep[r // per_prompt] * per_prompt + r % per_prompt for r in chosen} == expected
        assert torch.equal(select_rows(sub.patches, sub.coreset)[layer], sub.patches[layer, sub.coreset[layer]])
    # A subset at or below the budget is searched exactly.
    assert big_bank.subset([1, 4]).coreset_for(BUDGET) is None


@pytest.mark.parametrize(
    "case, edit",
    [
        ("out of range", lambda t, m: t.__setitem__("coreset", t["coreset"] + 10_000)),
        ("float", lambda t, m: t.__setitem__("coreset", t["coreset"].float())),
        ("over budget", lambda t, m: m.__setitem__("coreset_budget", "3")),
        ("no budget", lambda t, m: m.pop("coreset_budget")),
        ("wrong layers", lambda t, m: t.__setitem__("coreset", t["coreset"][:1])),
    ],
)
def test_malformed_stored_coreset_is_refused(big_bank: PromptBank, case: str, edit) -> None:
    with pytest.raises(PromptBankError, match="coreset"):
        PromptBank.from_bytes(_rewrite(big_bank.to_bytes(), edit), source="bad.bank")
