"""What the model benches share (dev only): one checkpoint, one dataset read, one prompt manifest, and the
categories to walk with each category's samples and K-shot prompt draws (pipelines/manifest.py), so that two
benches on the same arguments score the same images against the same references."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from model import InCTRLv2
from pipelines.datasets.image_loading import load_image
from pipelines.datasets.registry import read_dataset
from pipelines.datasets.sample import Sample
from pipelines.manifest import sample_prompts

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CategoryInputs:
    """One category's samples (every split) and its prompt draws, each K image paths, in seed order."""

    category: str
    samples: list[Sample]
    prompts: list[list[Path]]

    @property
    def test(self) -> list[Sample]:
        return [s for s in self.samples if s.split == "test"]

    @property
    def class_name(self) -> str:
        return self.category.replace("_", " ")

    def references(self, draw: list[Path], size: int) -> torch.Tensor:
        """(K, 3, size, size): the images of one prompt draw."""
        by_path = {str(s.image): s for s in self.samples}
        return torch.stack([load_image(by_path[str(p)], size) for p in draw])


@dataclass(frozen=True)
class BenchInputs:
    detector: InCTRLv2
    categories: list[CategoryInputs]

    @property
    def size(self) -> int:
        return self.detector.backbone.image_size


def bench_inputs(checkpoint: Path, dataset: str, root: Path, categories: list[str] | None, shots: int, seeds: int) -> BenchInputs:
    """The detector of ``checkpoint`` (on the GPU when there is one) and the chosen categories of ``dataset``
    at ``root``, each with ``seeds`` draws of ``shots`` references."""
    detector = InCTRLv2.load(checkpoint, device="cuda" if torch.cuda.is_available() else "cpu")
    samples = read_dataset(dataset, root, categories=categories)
    manifest = sample_prompts(samples, shots, list(range(seeds)), dataset=dataset, root=root)
    return BenchInputs(
        detector,
        [
            CategoryInputs(category, [s for s in samples if s.category == category], [manifest.prompt_paths(category, seed) for seed in range(seeds)])
            for category in sorted({s.category for s in samples})
        ],
    )


@torch.inference_mode()
def encode_samples(detector: InCTRLv2, samples: list[Sample], size: int, batch_size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, E) embeddings and (N, L, P, W) patch tokens of ``samples`` (InCTRLv2.encode), in batches, with progress records."""
    embeddings, patches = [], []
    for start in range(0, len(samples), batch_size):
        images = torch.stack([load_image(s, size) for s in samples[start : start + batch_size]]).to(detector.device)
        embedding, patch = detector.encode(images)
        embeddings.append(embedding)
        patches.append(patch)
        log.info("encoding", extra={"progress": {"task": f"encoding {samples[0].category}", "done": start + len(images), "total": len(samples)}})
    return torch.cat(embeddings), torch.cat(patches)
