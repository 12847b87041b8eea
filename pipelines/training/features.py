"""Frozen-backbone features per image: computed once and kept in memory or on disk, or recomputed each time.

The backbone never trains, so an image's embedding and patch tokens are the same every epoch; caching
them turns an epoch into head-only work.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from model import InCTRLv2
from pipelines.datasets import Sample
from pipelines.training.geometry import model_image

log = logging.getLogger(__name__)


class FeatureStore:
    """`features(samples)` -> embeddings (B, E), patch tokens (B, L, N, W) on the detector's device."""

    def __init__(self, detector: InCTRLv2, cache: bool, directory: Path | None = None, encode_batch: int = 32):
        self.detector = detector
        self.cache = cache
        self.directory = directory
        self.encode_batch = encode_batch
        self._memory: dict[Path, tuple[torch.Tensor, torch.Tensor]] = {}
        if cache and directory is not None:
            directory.mkdir(parents=True, exist_ok=True)

    def features(self, samples: Sequence[Sample]) -> tuple[torch.Tensor, torch.Tensor]:
        missing = list(dict.fromkeys(s for s in samples if not self._cached(s)))
        encoded = dict(zip((s.image for s in missing), self._encode(missing)))
        if self.cache:
            for path, features in encoded.items():
                self._store(path, features)
        pairs = [encoded.get(s.image) or self._load(s.image) for s in samples]
        device = self.detector.device
        return torch.stack([p[0] for p in pairs]).to(device), torch.stack([p[1] for p in pairs]).to(device)

    def warm(self, samples: Sequence[Sample]) -> None:
        """Encode every not yet cached image now, in large batches (no-op without caching)."""
        if not self.cache:
            return
        todo = list(dict.fromkeys(s for s in samples if not self._cached(s)))
        for start in range(0, len(todo), self.encode_batch):
            self.features(todo[start : start + self.encode_batch])
        log.info("feature cache warm images=%d encoded=%d", len(samples), len(todo))

    def _encode(self, samples: Sequence[Sample]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        size = self.detector.backbone.image_size
        out: list[tuple[torch.Tensor, torch.Tensor]] = []
        for start in range(0, len(samples), self.encode_batch):
            chunk = samples[start : start + self.encode_batch]
            embedding, patches = self.detector.encode(torch.stack([model_image(s, size) for s in chunk]))
            out += [(e.cpu(), p.cpu()) for e, p in zip(embedding, patches)]
        return out

    def _file(self, directory: Path, path: Path) -> Path:
        key = hashlib.sha256(f"{self.detector.backbone_id}|{path.resolve()}".encode()).hexdigest()[:24]
        return directory / f"{key}.safetensors"

    def _cached(self, sample: Sample) -> bool:
        if not self.cache:
            return False
        if self.directory is None:
            return sample.image in self._memory
        return self._file(self.directory, sample.image).is_file()

    def _store(self, path: Path, features: tuple[torch.Tensor, torch.Tensor]) -> None:
        if self.directory is None:
            self._memory[path] = features
            return
        target = self._file(self.directory, path)
        partial = target.with_suffix(f".{os.getpid()}.partial")
        save_file({"embedding": features[0].contiguous(), "patches": features[1].contiguous()}, partial)
        partial.replace(target)  # atomic: workers sharing the folder never read half a file

    def _load(self, path: Path) -> tuple[torch.Tensor, torch.Tensor]:
        if self.directory is None:
            return self._memory[path]
        tensors = load_file(self._file(self.directory, path))
        return tensors["embedding"], tensors["patches"]
