"""Few-shot prompt sampling: which K normal images serve as prompts, per category and seed.

Prompts come from the normal TRAIN images of a category. Datasets without a train split (ELPV, SDD,
AITEX, BrainMRI, HeadCT) can draw them from the normal test images with `allow_test_normals=True`;
`query_samples` then leaves those prompt images out of the queries, so a prompt is never scored.
Draws are keyed by (seed, category) and made from the path-sorted candidates, so they do not depend on
the order of the samples or on which other categories are present.
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field, model_validator

from pipelines.datasets import NORMAL, Sample


class PromptManifest(BaseModel):
    """Prompt image paths per category per seed (seed keys are strings in JSON)."""

    dataset: str
    root: str
    shots: int = Field(gt=0, description="K, the number of normal prompt images per query")
    seeds: list[int]
    prompts: dict[str, dict[int, list[str]]]
    prompts_from_test: bool = False

    @model_validator(mode="after")
    def _k_distinct_prompts(self) -> PromptManifest:
        for category, per_seed in self.prompts.items():
            for seed, paths in per_seed.items():
                if len(set(paths)) != len(paths) or len(paths) != self.shots:
                    raise ValueError(
                        f"category {category!r} seed {seed}: need {self.shots} distinct prompts, got {paths}"
                    )
        return self

    def prompt_paths(self, category: str, seed: int) -> list[Path]:
        """The prompt images of `category` for `seed`."""
        if category not in self.prompts or seed not in self.prompts[category]:
            raise KeyError(f"manifest has no prompts for category {category!r} seed {seed} (seeds {self.seeds})")
        return [Path(p) for p in self.prompts[category][seed]]

    def query_samples(self, samples: Sequence[Sample], category: str, seed: int) -> list[Sample]:
        """The test samples of `category` to score under `seed`, never including its prompts."""
        prompts = {str(p) for p in self.prompt_paths(category, seed)}
        return [s for s in samples if s.category == category and s.split == "test" and str(s.image) not in prompts]

    def save(self, path: Path | str) -> None:
        """Write the manifest as JSON."""
        Path(path).write_text(self.model_dump_json(indent=2) + "\n")

    @classmethod
    def load(cls, path: Path | str) -> PromptManifest:
        """Read a manifest written by `save`."""
        return cls.model_validate_json(Path(path).read_text())


def _draw(candidates: list[Path], shots: int, seed: int, category: str) -> list[str]:
    rng = np.random.default_rng([seed, zlib.crc32(category.encode())])
    picks = rng.choice(len(candidates), size=shots, replace=False)
    return [str(candidates[i]) for i in sorted(picks.tolist())]


def sample_prompts(
    samples: Sequence[Sample],
    shots: int,
    seeds: Sequence[int],
    *,
    dataset: str = "",
    root: Path | str = "",
    allow_test_normals: bool = False,
) -> PromptManifest:
    """Draw `shots` normal prompt images per category for each seed."""
    if shots <= 0 or not seeds:
        raise ValueError(f"need shots > 0 and at least one seed, got shots={shots}, seeds={list(seeds)}")
    pools: dict[str, dict[str, set[Path]]] = defaultdict(lambda: {"train": set(), "test": set()})
    for sample in samples:
        if sample.label == NORMAL and sample.split in ("train", "test"):
            pools[sample.category][sample.split].add(sample.image)
    categories = sorted({s.category for s in samples})
    if not categories:
        raise ValueError("no samples to draw prompts from")
    from_test = False
    prompts: dict[str, dict[int, list[str]]] = {}
    for category in categories:
        pool = pools[category]["train"]
        if not pool and allow_test_normals:
            pool, from_test = pools[category]["test"], True
        candidates = sorted(pool)
        if len(candidates) < shots:
            source = "normal train or test" if allow_test_normals else "normal train"
            raise ValueError(f"category {category!r} has {len(candidates)} {source} images, fewer than shots={shots}")
        prompts[category] = {seed: _draw(candidates, shots, seed, category) for seed in seeds}
    return PromptManifest(
        dataset=dataset, root=str(root), shots=shots, seeds=list(seeds), prompts=prompts, prompts_from_test=from_test
    )
