"""Few-shot prompt sampling: determinism, normal-train-only prompts, JSON round trip."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.datasets import ANOMALOUS, NORMAL, Sample
from pipelines.manifest import PromptManifest, sample_prompts


def make_samples(root: Path, category: str, n_train: int, n_test: int) -> list[Sample]:
    train = [
        Sample(image=root / category / f"train_{i}.png", label=NORMAL, mask=None, category=category, split="train")
        for i in range(n_train)
    ]
    test = [
        Sample(image=root / category / f"test_{i}.png", label=i % 2, mask=None, category=category, split="test")
        for i in range(n_test)
    ]
    return train + test


def test_prompts_are_normal_train_images_and_deterministic(tmp_path: Path) -> None:
    samples = make_samples(tmp_path, "bottle", 20, 10) + make_samples(tmp_path, "cable", 5, 4)
    manifest = sample_prompts(samples, shots=4, seeds=[0, 1, 2], dataset="mvtec", root=tmp_path)
    train_paths = {str(s.image) for s in samples if s.split == "train" and s.label == NORMAL}
    for category in ("bottle", "cable"):
        for seed in (0, 1, 2):
            prompts = manifest.prompt_paths(category, seed)
            assert len(prompts) == 4 and len(set(prompts)) == 4
            assert {str(p) for p in prompts} <= train_paths
            assert all(p.parent.name == category for p in prompts)
    assert manifest.prompts["bottle"][0] != manifest.prompts["bottle"][1]
    reordered = sample_prompts(list(reversed(samples)), shots=4, seeds=[0, 1, 2], dataset="mvtec", root=tmp_path)
    assert reordered == manifest
    # A category's prompts do not depend on which other categories are present.
    alone = sample_prompts(make_samples(tmp_path, "bottle", 20, 10), shots=4, seeds=[0])
    assert alone.prompts["bottle"][0] == manifest.prompts["bottle"][0]


def test_round_trip_json(tmp_path: Path) -> None:
    manifest = sample_prompts(
        make_samples(tmp_path, "grid", 6, 2), shots=2, seeds=[7, 8], dataset="mvtec", root=tmp_path
    )
    manifest.save(tmp_path / "prompts.json")
    loaded = PromptManifest.load(tmp_path / "prompts.json")
    assert loaded == manifest and loaded.prompt_paths("grid", 8) == manifest.prompt_paths("grid", 8)
    with pytest.raises(KeyError, match="seed 9"):
        loaded.prompt_paths("grid", 9)
    edited = manifest.model_dump()
    edited["prompts"]["grid"][7] = edited["prompts"]["grid"][7][:1] * 2
    with pytest.raises(ValueError, match="need 2 distinct prompts"):
        PromptManifest.model_validate(edited)


def test_too_few_normal_train_images_is_an_error(tmp_path: Path) -> None:
    samples = make_samples(tmp_path, "grid", 2, 4)
    with pytest.raises(ValueError, match=r"'grid' has 2 normal train images, fewer than shots=4"):
        sample_prompts(samples, shots=4, seeds=[0])
    with pytest.raises(ValueError, match="shots > 0"):
        sample_prompts(samples, shots=0, seeds=[0])


def test_test_normals_as_prompts_are_excluded_from_queries(tmp_path: Path) -> None:
    samples = make_samples(tmp_path, "elpv", 0, 12)
    with pytest.raises(ValueError, match="0 normal train images"):
        sample_prompts(samples, shots=2, seeds=[0])
    manifest = sample_prompts(samples, shots=2, seeds=[0, 1], allow_test_normals=True)
    assert manifest.prompts_from_test
    for seed in (0, 1):
        prompts = {str(p) for p in manifest.prompt_paths("elpv", seed)}
        queries = manifest.query_samples(samples, "elpv", seed)
        assert len(queries) == 12 - 2
        assert prompts.isdisjoint(str(q.image) for q in queries)
        assert all(s.label == NORMAL for s in samples if str(s.image) in prompts)
    anomalous_paths = {str(s.image) for s in samples if s.label == ANOMALOUS}
    assert anomalous_paths.isdisjoint(p for per_seed in manifest.prompts["elpv"].values() for p in per_seed)
