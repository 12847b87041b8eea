"""FeatureStore (pipelines/training/features.py): cached in memory, cached on disk, or encoded every time,
the training loop gets the same features; only the cache decides how often the frozen backbone runs."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from model import InCTRLv2, InCTRLv2Config
from pipelines.datasets.registry import read_dataset
from pipelines.training.features import FeatureStore


class CountingEncodes:
    """Counts the images the detector's encode() sees."""

    def __init__(self, detector: InCTRLv2, monkeypatch: pytest.MonkeyPatch) -> None:
        self.images = 0
        encode = detector.encode

        def counted(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            self.images += len(images)
            return encode(images)

        monkeypatch.setattr(detector, "encode", counted)


@pytest.fixture
def detector() -> InCTRLv2:
    return InCTRLv2(InCTRLv2Config(backbone="tiny", pretrained=None), device="cpu")


def test_every_store_gives_the_same_features_and_only_the_cache_skips_the_backbone(
    detector: InCTRLv2, synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    samples = read_dataset("mvtec", synthetic_root)[:6]
    counter = CountingEncodes(detector, monkeypatch)
    stores = {"memory": FeatureStore(detector, cache=True), "disk": FeatureStore(detector, cache=True, directory=tmp_path / "cache"),
              "uncached": FeatureStore(detector, cache=False)}  # fmt: skip
    encoded = {}
    for name, store in stores.items():
        store.warm(samples)
        before = counter.images
        first, again = store.features(samples), store.features(samples[::-1])
        encoded[name] = counter.images - before
        # allclose: an uncached store encodes the reversed batch anew, and a batch's order moves the last bits.
        assert torch.allclose(first[0].flip(0), again[0], atol=1e-5) and torch.allclose(first[1].flip(0), again[1], atol=1e-5), name
        assert first[0].shape == (6, detector.backbone.embed_dim) and first[1].shape[0] == 6
        if name == "memory":
            reference = first
        assert torch.allclose(first[0], reference[0], atol=1e-5) and torch.allclose(first[1], reference[1], atol=1e-5), name
    assert encoded == {"memory": 0, "disk": 0, "uncached": 12}  # warmed caches never encode again
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 6


def test_a_disk_cache_serves_a_new_store_without_encoding(
    detector: InCTRLv2, synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    samples = read_dataset("mvtec", synthetic_root)[:4]
    FeatureStore(detector, cache=True, directory=tmp_path).warm(samples)
    counter = CountingEncodes(detector, monkeypatch)
    FeatureStore(detector, cache=True, directory=tmp_path).features(samples)
    assert counter.images == 0
