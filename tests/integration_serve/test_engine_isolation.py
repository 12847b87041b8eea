"""InspectionEngine failure isolation with a real tiny detector and a real registry on the local S3 (no Ray).

Every broken thing is broken for real where it can be: bank objects and domain.json are overwritten in
the S3 server, banks are built by another detector. Only GPU conditions (out of memory, a failing device
copy) are injected, as no GPU is here.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from model import InCTRLv2, InCTRLv2Config, PromptBank
from model import InvalidImageError
from services.imaging.geometry import prepare_frame
from services.protocol.outcomes import FrameInput, Rejected, Retryable, Scored
from services.protocol.messages import DeadLetterReason
from services.storage.object_store import ObjectStore
from services.registry.domain_registry import DomainRegistry
from services.registry.records import DomainRecord
from services.serving.bank_cache import BankCache
from services.serving.engine import InspectionEngine, bank_mismatch

from .conftest import texture

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def detector() -> InCTRLv2:
    return InCTRLv2(InCTRLv2Config(backbone="tiny", pretrained=None))


@pytest.fixture
def store(service_settings) -> ObjectStore:
    return ObjectStore.from_settings(service_settings)


@pytest.fixture
def registry(store: ObjectStore, unique_name) -> DomainRegistry:
    registry = DomainRegistry(store, f"s3://{unique_name('models')}/registry/")
    return registry


def register(registry: DomainRegistry, detector: InCTRLv2, name: str, stripes: int = 4) -> DomainRecord:
    return registry.register(name, name, [texture(stripes + i, stripes=stripes) for i in range(2)], detector, threshold=0.5)


def bank_key(registry: DomainRegistry, record: DomainRecord, leaf: str = "bank.safetensors") -> str:
    return registry.uri.split("/", 3)[3] + f"{record.name}/v{record.version}/{leaf}"


def engine_for(registry: DomainRegistry, detector: InCTRLv2, threshold_for=lambda r: r.threshold) -> InspectionEngine:
    return InspectionEngine(detector, BankCache(registry, detector.device), threshold_for, "test-model")


def frame(domain: str, image: np.ndarray, size: int = 64) -> FrameInput:
    """A frame as the consumer sends it: prepared at the (tiny) backbone's geometry."""
    return FrameInput(domain, prepare_frame(image, size))


def assert_rejected(outcome, *needles: str, reason: DeadLetterReason = DeadLetterReason.INFERENCE_ERROR) -> None:
    assert isinstance(outcome, Rejected), outcome
    assert outcome.reason is reason
    for needle in needles:
        assert needle in outcome.detail, (needle, outcome.detail)


def test_bad_frames_and_broken_domains_fail_alone_in_one_mixed_batch(
    registry: DomainRegistry, store: ObjectStore, detector: InCTRLv2
) -> None:
    good = register(registry, detector, "good")
    other = register(registry, detector, "other", stripes=9)
    corrupt_bank = register(registry, detector, "corrupt-bank")
    store.put_bytes(registry.bucket, bank_key(registry, corrupt_bank), b"\x00" * 64)
    corrupt_record = register(registry, detector, "corrupt-record")
    store.put_bytes(registry.bucket, bank_key(registry, corrupt_record, "domain.json"), b'{"name": "corrupt-record", "vers')
    stranger = InCTRLv2(InCTRLv2Config(backbone="tiny", pretrained=None, seed=7))
    register(registry, stranger, "foreign-backbone")
    engine = engine_for(registry, detector)
    frames = [
        frame("good", texture(20, size=(80, 64))),
        frame("corrupt-bank", texture(21)),
        FrameInput("good", np.full((3, 64, 64), np.nan, dtype=np.float16)),
        frame("other", texture(22, size=(64, 96), stripes=9)),
        FrameInput("good", np.random.default_rng(0).random((3, 4, 4000), dtype=np.float32)),  # not prepared
        frame("corrupt-record", texture(23)),
        frame("foreign-backbone", texture(24)),
        frame("ghost", texture(26)),
        frame("other", texture(27, stripes=9)),
    ]
    outcomes = engine.inspect(frames)
    assert_rejected(outcomes[1], "'corrupt-bank' cannot be served", "bank.safetensors")
    assert_rejected(outcomes[2], "frame 2 of domain 'good'", "NaN")
    assert_rejected(outcomes[4], "frame 4 of domain 'good'", "must be (3, 64, 64) float16 pixels", "(3, 4, 4000) float32")
    assert_rejected(outcomes[5], "'corrupt-record' cannot be served", "domain.json")
    assert_rejected(outcomes[6], "'foreign-backbone' cannot be served", "random-seed7", "random-seed0")
    assert_rejected(outcomes[7], "'ghost'", reason=DeadLetterReason.UNKNOWN_DOMAIN)
    for index, record in ((0, good), (3, other), (8, other)):
        outcome = outcomes[index]
        assert isinstance(outcome, Scored), outcome
        alone = engine.inspect([frames[index]])[0]
        assert outcome.score == pytest.approx(alone.score, abs=1e-6)
        assert outcome.reference_version == record.reference_version
        assert outcome.anomaly_map.shape == (64, 64) and outcome.anomaly_map.dtype == np.float16  # model resolution
    with pytest.raises(InvalidImageError, match="4x4000: aspect ratio 1000:1 exceeds 64:1"):  # refused where it is prepared
        prepare_frame(np.random.default_rng(0).random((3, 4, 4000), dtype=np.float32), 64)


def test_a_bank_of_another_feature_shape_is_refused_before_scoring(detector: InCTRLv2) -> None:
    bank = detector.build_prompt_bank(torch.from_numpy(np.stack([texture(1), texture(2)])), "capsule")
    assert bank_mismatch(detector, bank) is None
    narrow = PromptBank(bank.class_name, bank.backbone_id, bank.embeddings, bank.patches[..., :16].contiguous(), bank.text)
    assert bank_mismatch(detector, narrow) == "bank has {'patch width': 16}, the detector needs " + str(
        {"embedding width": 64, "patch layers": len(detector.backbone.layers), "patch width": 64, "patches per prompt": 64}
    )
    fewer_layers = PromptBank(bank.class_name, bank.backbone_id, bank.embeddings, bank.patches[:1].contiguous(), bank.text)
    assert "'patch layers': 1" in (bank_mismatch(detector, fewer_layers) or "")


def test_an_unexpected_error_scoring_one_domain_fails_only_that_domains_frames(
    registry: DomainRegistry, detector: InCTRLv2
) -> None:
    register(registry, detector, "steady")
    register(registry, detector, "fragile", stripes=9)

    def threshold_for(record: DomainRecord) -> float:
        if record.name == "fragile":
            raise KeyError(f"no threshold policy for {record.name}")
        return record.threshold

    engine = engine_for(registry, detector, threshold_for)
    outcomes = engine.inspect([frame("fragile", texture(1)), frame("steady", texture(2)), frame("fragile", texture(3))])
    for outcome in (outcomes[0], outcomes[2]):
        assert_rejected(outcome, "scoring 2 frame(s) of domain 'fragile'", "KeyError", "no threshold policy")
    assert isinstance(outcomes[1], Scored) and outcomes[1].threshold == 0.5


def test_cuda_out_of_memory_splits_the_batch_and_a_frame_that_still_fails_is_retryable(
    registry: DomainRegistry, detector: InCTRLv2, monkeypatch: pytest.MonkeyPatch
) -> None:
    register(registry, detector, "alpha")
    engine = engine_for(registry, detector)
    frames = [frame("alpha", texture(30 + i)) for i in range(5)]
    expected = [o.score for o in engine.inspect(frames)]
    encode = detector.encode
    calls: list[int] = []
    poisoned = torch.from_numpy(frames[3].pixels).float()

    def encode_on_a_small_gpu(images: torch.Tensor):  # noqa: ANN202 - stands in for a GPU that is not here
        calls.append(len(images))
        if len(images) > 2 or any(torch.equal(image, poisoned) for image in images):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return encode(images)

    monkeypatch.setattr(detector, "encode", encode_on_a_small_gpu)
    outcomes = engine.inspect(frames)
    assert isinstance(outcomes[3], Retryable) and "frame 3 of domain 'alpha': backbone failed" in outcomes[3].detail
    assert "OutOfMemoryError" in outcomes[3].detail
    for i in (0, 1, 2, 4):
        assert isinstance(outcomes[i], Scored) and outcomes[i].score == pytest.approx(expected[i], abs=1e-6)
    assert calls[0] == 5 and max(calls[1:]) <= 3


def test_a_bank_whose_device_copy_fails_fails_only_its_domain(
    registry: DomainRegistry, detector: InCTRLv2, monkeypatch: pytest.MonkeyPatch
) -> None:
    register(registry, detector, "fine")
    register(registry, detector, "unmovable", stripes=9)
    register(registry, detector, "no-room", stripes=6)
    on = PromptBank.on

    def copy_to_a_gpu(bank: PromptBank, device: torch.device) -> PromptBank:  # stands in for a GPU that is not here
        if bank.class_name == "unmovable":
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        if bank.class_name == "no-room":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")
        return on(bank, device)

    monkeypatch.setattr(PromptBank, "on", copy_to_a_gpu)
    engine = engine_for(registry, detector)
    outcomes = engine.inspect([frame("unmovable", texture(1)), frame("fine", texture(2)), frame("no-room", texture(3))])
    assert_rejected(outcomes[0], "'unmovable' cannot be served", "illegal memory access")
    assert isinstance(outcomes[1], Scored)
    assert isinstance(outcomes[2], Retryable) and "'no-room' cannot be served" in outcomes[2].detail
