"""Shared fixtures: one small synthetic MVTec-layout set, one tiny standardised checkpoint and one local Ray."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import ray

from model import InCTRLv2, InCTRLv2Config
from model.config import FusionConfig
from pipelines.synth import generate
from pipelines.training import start_ray


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    generate(root, seed=3, domains=["capsule", "brick"], n_train=6, n_test_good=3, n_test_defect=4, size=64)
    return root


@pytest.fixture(scope="session")
def standardised_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight checkpoint with the standardised fusion, for the fusion benches' CLI tests."""
    detector = InCTRLv2(InCTRLv2Config(backbone="tiny", pretrained=None, fusion=FusionConfig(image="standardised")))
    return detector.save(tmp_path_factory.mktemp("standardised") / "checkpoint")


@pytest.fixture(scope="session")
def local_ray(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A real local Ray shared by the training tests (starting one costs about 5 s)."""
    if ray.is_initialized():
        yield
        return
    start_ray(temp_dir=tmp_path_factory.mktemp("ray"), num_cpus=2)
    yield
    ray.shutdown()
