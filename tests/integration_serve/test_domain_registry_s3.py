"""DomainRegistry, BankCache and InspectionEngine on the real local S3 (no Ray)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from model import InCTRLv2, InCTRLv2Config
from model.calibration import fpr_threshold
from model.nuisance import NuisanceViews
from services.protocol.outcomes import Rejected
from services.protocol.messages import DeadLetterReason
from services.storage.object_store import ObjectStore
from services.registry.domain_registry import DomainRegistry
from services.registry.records import RegistryError, UnknownDomainError
from services.registry.references import load_reference_images
from services.serving.bank_cache import BankCache
from services.imaging.geometry import prepare_frame, restore_map
from services.protocol.outcomes import FrameInput
from services.serving.engine import InspectionEngine

from .conftest import png_bytes, texture

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def detector() -> InCTRLv2:
    return InCTRLv2(InCTRLv2Config(backbone="tiny", pretrained=None))


@pytest.fixture
def registry(service_settings, unique_name) -> DomainRegistry:
    return DomainRegistry(ObjectStore.from_settings(service_settings), f"s3://{unique_name('models')}/registry/")


def test_register_versions_list_show_and_calibrated_threshold(registry: DomainRegistry, detector: InCTRLv2) -> None:
    first = registry.register("capsule-a", "capsule", [texture(i) for i in range(4)], detector)
    assert (first.version, first.shots, first.calibration.method) == (1, 4, "leave-one-out")
    scores = first.calibration.normal_scores
    assert len(scores) == 4 + first.calibration.view_scores and first.calibration.view_scores == NuisanceViews().count
    assert first.threshold == pytest.approx(fpr_threshold(scores, first.calibration.target_fpr))
    second = registry.register("capsule-a", "capsule", [texture(9, stripes=7)], detector, threshold=0.3)
    assert second.version == 2 and registry.current_version("capsule-a") == 2
    assert registry.show("capsule-a").threshold == 0.3 and registry.show("capsule-a", 1).threshold == first.threshold
    assert registry.load("capsule-a").bank.shots == 1 and registry.load("capsule-a", 1).bank.shots == 4
    assert [r.name for r in registry.list()] == ["capsule-a"]


def test_registry_refuses_bad_requests(registry: DomainRegistry, detector: InCTRLv2) -> None:
    with pytest.raises(UnknownDomainError, match="ghost"):
        registry.show("ghost")
    with pytest.raises(RegistryError, match="at least 2 reference images"):
        registry.register("one-shot", "capsule", [texture(1)], detector)
    with pytest.raises(RegistryError, match="domain name"):
        registry.register("Bad_Name", "capsule", [texture(1)], detector, threshold=0.5)
    with pytest.raises(RegistryError, match="outside"):
        registry.register("capsule", "capsule", [texture(1)], detector, threshold=1.5)
    assert registry.list() == []


def test_reference_images_from_s3_prefix_and_folder(service_settings, unique_name, tmp_path) -> None:
    store = ObjectStore.from_settings(service_settings)
    bucket = unique_name("refs")
    store.ensure_bucket(bucket)
    for i in range(3):
        store.put_bytes(bucket, f"capsule/good/{i}.png", png_bytes(texture(i)))
    store.put_bytes(bucket, "capsule/good/notes.txt", b"not an image")
    images = load_reference_images(f"s3://{bucket}/capsule/good", store)
    assert len(images) == 3 and images[0].shape == (3, 64, 64)
    (tmp_path / "broken.png").write_bytes(b"garbage")
    with pytest.raises(RegistryError, match="broken.png"):
        load_reference_images(str(tmp_path))
    with pytest.raises(RegistryError, match="no reference images"):
        load_reference_images(f"s3://{bucket}/empty/", store)


def test_bank_cache_rechecks_version_after_interval(registry: DomainRegistry, detector: InCTRLv2) -> None:
    now = [0.0]
    cache = BankCache(registry, detector.device, capacity=1, recheck_s=10.0, clock=lambda: now[0])
    registry.register("alpha", "capsule", [texture(1), texture(2)], detector, threshold=0.5)
    registry.register("beta", "fabric", [texture(3)], detector, threshold=0.5)
    assert cache.get("alpha").record.version == 1
    registry.register("alpha", "capsule", [texture(4)], detector, threshold=0.5)
    now[0] = 5.0
    assert cache.get("alpha").record.version == 1  # within the interval: the cached version serves
    now[0] = 10.5
    assert cache.get("alpha").record.version == 2
    cache.get("beta")
    assert cache.cached() == {"beta": 1}  # capacity 1: alpha evicted


def test_engine_mixed_batch_matches_single_frames_and_isolates_failures(registry: DomainRegistry, detector: InCTRLv2) -> None:
    registry.register("alpha", "capsule", [texture(1), texture(2)], detector, threshold=0.5)
    registry.register("beta", "fabric", [texture(3, stripes=9)], detector, threshold=0.4)
    engine = InspectionEngine(detector, BankCache(registry, detector.device), lambda r: r.threshold, "test-model")
    images = [("alpha", texture(20, size=(80, 64))), ("beta", texture(21, size=(64, 96), stripes=9)), ("ghost", texture(22)),
              ("alpha", None), ("beta", texture(23))]  # fmt: skip
    nan_pixels = np.full((3, 64, 64), np.nan, dtype=np.float16)
    frames = [FrameInput(d, nan_pixels if image is None else prepare_frame(image, engine.input_size)) for d, image in images]
    outcomes = engine.inspect(frames)
    assert isinstance(outcomes[2], Rejected) and outcomes[2].reason is DeadLetterReason.UNKNOWN_DOMAIN and "ghost" in outcomes[2].detail
    assert isinstance(outcomes[3], Rejected) and outcomes[3].reason is DeadLetterReason.INFERENCE_ERROR and "NaN" in outcomes[3].detail
    for index in (0, 1, 4):
        frame, outcome, image = frames[index], outcomes[index], images[index][1]
        alone = engine.inspect([frame])[0]
        # Today's path, in process on the full-resolution float image: the same score and map within 1e-3.
        direct = detector.detect(torch.from_numpy(image)[None], registry.load(frame.domain).bank)
        assert outcome.score == pytest.approx(alone.score, abs=1e-6) == pytest.approx(float(direct.scores[0]), abs=1e-3)
        assert outcome.anomaly_map.shape == (engine.input_size, engine.input_size)
        np.testing.assert_allclose(restore_map(outcome.anomaly_map, *image.shape[1:]), direct.maps[0].numpy(), atol=1e-3)
        assert outcome.threshold == (0.5 if frame.domain == "alpha" else 0.4)
        assert outcome.reference_version == f"{frame.domain}/v1" and outcome.model_version == "test-model"
