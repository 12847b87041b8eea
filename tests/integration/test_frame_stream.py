"""Frames through the real broker and S3: results, dead letters, commits (statistics stand-in detector)."""

from __future__ import annotations

from dataclasses import astuple

import io
import json
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timezone
from types import ModuleType

import numpy as np
import pytest
from kafka import KafkaProducer
from PIL import Image

from services.consumer.frame_consumer import FrameConsumer
from services.protocol.outcomes import DecodedFrame, InspectionOutcome
from services.protocol.messages import DeadLetter, DeadLetterReason, InspectionRequest, InspectionResult, StoredOriginal, Verdict
from services.results.keys import input_key
from services.storage.object_store import ObjectStore
from services.storage.uri import S3Uri
from services.producer.frame_producer import FrameProducer
from services.imaging.decoding import decode_image
from services.results.encoding import decode_map_png
from services.settings import ServiceSettings

pytestmark = pytest.mark.integration

NOW = datetime(2026, 3, 1, 8, 0, tzinfo=timezone.utc)


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def plain_image(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    return png(np.clip(128 + rng.normal(0, 2, (64, 64, 3)), 0, 255).astype(np.uint8))


def defect_image(seed: int) -> bytes:
    pixels = np.full((64, 64, 3), 50, dtype=np.uint8)
    corner = 8 + seed % 16
    pixels[corner : corner + 24, corner : corner + 24] = 255
    return png(pixels)


def noise_image(seed: int) -> bytes:
    return png(np.random.default_rng(seed).integers(0, 256, (64, 64, 3), dtype=np.uint8))


def raw_producer(settings: ServiceSettings) -> KafkaProducer:
    # Tansu has no size limit, so an oversize message reaches the consumer the way a misconfigured client's would.
    return KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, max_request_size=20_000_000)


def request_bytes(**fields: object) -> bytes:
    return InspectionRequest(**{"domain": "washer", "line": "line-1", "timestamp": NOW, **fields}).to_bytes()


def test_frames_in_results_out(
    service_settings: ServiceSettings,
    object_store: ObjectStore,
    statistics_inspector: ModuleType,
    read_topic: Callable[..., list[bytes]],
) -> None:
    settings = service_settings.model_copy(update={"inline_image_max_bytes": 4000, "max_poll_records": 5})
    expected: dict[str, Verdict | None] = {}
    originals: dict[str, bytes] = {"large-0": noise_image(0)}
    with FrameProducer(settings, object_store) as producer:
        for i in range(6):
            originals[f"plain-{i}"], originals[f"defect-{i}"] = plain_image(i), defect_image(i)
            sent = producer.send_image(originals[f"plain-{i}"], "washer", "line-1", f"plain-{i}", timestamp=NOW)
            expected[sent.frame_id] = Verdict.NORMAL
            sent = producer.send_image(originals[f"defect-{i}"], "fabric", "line-2", f"defect-{i}", timestamp=NOW)
            expected[sent.frame_id] = Verdict.ANOMALOUS
        large = producer.send_image(originals["large-0"], "washer", "line-1", "large-0", timestamp=NOW)
        expected[large.frame_id] = None
    assert large.image is None and large.image_uri is not None  # above inline_image_max_bytes
    assert object_store.exists(settings.frames_bucket, large.image_uri.split("/", 3)[3])

    with FrameConsumer.connect(settings, statistics_inspector.inspect_by_statistics, object_store) as consumer:
        stats = consumer.run(max_frames=len(expected), idle_timeout_s=30)
    assert stats.results == len(expected) and stats.handled == len(expected)
    assert stats.batches >= 3  # micro-batches capped by max_poll_records
    assert stats.commits == stats.batches

    keys = object_store.list_keys(settings.results_bucket, "results/")
    assert len(keys) == 4 * len(expected)  # result.json, map.png, overlay.jpg and the input as received
    events = [InspectionResult.from_bytes(value) for value in read_topic(settings.results_topic, len(expected))]
    assert sorted(event.frame_id for event in events) == sorted(expected)
    for event in events:
        assert event.result_key in keys and event.map_key in keys and event.overlay_key in keys
        assert event.result_key.startswith(f"results/{event.domain}/{event.line}/2026-03-01/{event.frame_id}/")
        stored = InspectionResult.model_validate(object_store.get_json(settings.results_bucket, event.result_key))
        assert stored == event
        if expected[event.frame_id] is not None:
            assert event.verdict == expected[event.frame_id], event.frame_id
        anomaly_map = decode_map_png(object_store.get_bytes(settings.results_bucket, event.map_key))
        # The inspector's 16 x 16 map at "model resolution", restored to the 64 x 64 frame by the writer.
        assert anomaly_map.shape == (64, 64)
        assert event.map_statistics.max == pytest.approx(float(anomaly_map.max()), abs=1e-4)
        assert anomaly_map.max() <= event.score + 1e-4 and anomaly_map.max() >= 0.8 * event.score
        overlay = decode_image(object_store.get_bytes(settings.results_bucket, event.overlay_key))
        assert overlay.shape == (3, 64, 64)
        assert event.model_version == "statistics-v1" and event.latency_ms > 0
        # The image as sent, byte for byte, inline or by reference.
        assert object_store.get_bytes(settings.results_bucket, input_key(event.result_key, ".png")) == originals[event.frame_id]


def test_bad_messages_go_to_dead_letters_and_the_stream_goes_on(
    service_settings: ServiceSettings,
    object_store: ObjectStore,
    statistics_inspector: ModuleType,
    read_topic: Callable[..., list[bytes]],
) -> None:
    settings = service_settings.model_copy(update={"max_message_bytes": 50_000, "dead_letter_payload_max_bytes": 100})
    topic = settings.frames_topics[0]
    valid = json.loads(request_bytes(frame_id="x", image=plain_image(0)))
    missing_domain = {key: value for key, value in valid.items() if key != "domain"} | {"frame_id": "no-domain"}
    bad = {
        "malformed": (b'{"frame_id": "broken', DeadLetterReason.SCHEMA_VIOLATION),
        "no-domain": (json.dumps(missing_domain).encode(), DeadLetterReason.SCHEMA_VIOLATION),
        "corrupt": (request_bytes(frame_id="corrupt", image=b"\x89PNG\r\n\x1a\n garbage"), DeadLetterReason.UNDECODABLE_IMAGE),
        "unknown": (request_bytes(frame_id="unknown", domain="turbine", image=plain_image(1)), DeadLetterReason.UNKNOWN_DOMAIN),
        "oversize": (request_bytes(frame_id="oversize", image=noise_image(2) * 8), DeadLetterReason.OVERSIZE),
        "missing-uri": (request_bytes(frame_id="missing-uri", image_uri=f"s3://{settings.frames_bucket}/nope.png"), DeadLetterReason.UNDECODABLE_IMAGE),
        "elsewhere": (request_bytes(frame_id="elsewhere", image_uri=f"s3://{settings.results_bucket}/results/x/map.png"), DeadLetterReason.FORBIDDEN_REFERENCE),
    }  # fmt: skip
    producer = raw_producer(settings)
    producer.send(topic, partition=0, value=request_bytes(frame_id="good-first", image=plain_image(3)))
    for payload, _ in bad.values():
        producer.send(topic, partition=0, value=payload)
    producer.send(topic, partition=0, value=request_bytes(frame_id="good-last", image=defect_image(4)))
    producer.flush()
    producer.close()

    total = len(bad) + 2
    with FrameConsumer.connect(settings, statistics_inspector.inspect_by_statistics, object_store) as consumer:
        stats = consumer.run(max_frames=total, idle_timeout_s=30)
    assert stats.results == 2
    assert stats.dead_letters == Counter(reason.value for _, reason in bad.values())

    letters = [DeadLetter.from_bytes(value) for value in read_topic(settings.dead_letter_topic, len(bad))]
    assert len(letters) == len(bad)
    by_frame = {letter.frame_id: letter for letter in letters}
    for frame_id in ("corrupt", "unknown", "oversize", "missing-uri", "no-domain", "elsewhere"):
        assert by_frame[frame_id].reason == bad[frame_id][1], by_frame[frame_id]
    assert by_frame[None].reason == DeadLetterReason.SCHEMA_VIOLATION and "Invalid JSON" in by_frame[None].detail
    assert "domain" in by_frame["no-domain"].detail
    assert "above the limit of 50000" in by_frame["oversize"].detail
    assert by_frame["oversize"].payload_truncated and len(by_frame["oversize"].payload) == 100
    assert by_frame["oversize"].payload_size == len(bad["oversize"][0])
    # The original did not fit the letter: it is kept whole in the object store.
    stored = StoredOriginal.from_bytes(object_store.get_bytes(*astuple(S3Uri.parse(by_frame["oversize"].payload_uri or ""))))
    assert stored.value == bad["oversize"][0] and stored.offset == by_frame["oversize"].offset
    assert sorted(letter.offset for letter in letters) == list(range(1, len(bad) + 1))
    results = [InspectionResult.from_bytes(value) for value in read_topic(settings.results_topic, 2)]
    assert {result.frame_id for result in results} == {"good-first", "good-last"}

    # Every offset, dead-lettered ones included, was committed: the group has nothing left to read.
    with FrameConsumer.connect(settings, statistics_inspector.inspect_by_statistics, object_store) as again:
        assert again.run(idle_timeout_s=3).polled == 0


def test_frames_the_detector_always_fails_on_are_dead_lettered_alone_after_their_attempts(
    service_settings: ServiceSettings,
    object_store: ObjectStore,
    statistics_inspector: ModuleType,
    read_topic: Callable[..., list[bytes]],
) -> None:
    settings = service_settings.model_copy(update={"frame_max_attempts": 3, "inspect_retry_initial_backoff_s": 0.05})
    poison = {"f1", "f2"}
    calls: list[int] = []

    def fails_on_poison(frames: list[DecodedFrame]) -> list[InspectionOutcome]:
        calls.append(len(frames))
        if any(frame.request.frame_id in poison for frame in frames):
            raise RuntimeError("CUDA out of memory")
        return statistics_inspector.inspect_by_statistics(frames)

    producer = raw_producer(settings)
    for i in range(4):
        producer.send(settings.frames_topics[0], partition=0, value=request_bytes(frame_id=f"f{i}", image=plain_image(i)))
    producer.flush()
    producer.close()
    with FrameConsumer.connect(settings, fails_on_poison, object_store) as consumer:
        stats = consumer.run(max_frames=4, idle_timeout_s=30)
    # Never an inference_error on the first try: tried with the batch, then alone, then dead-lettered alone.
    assert stats.dead_letters == Counter({"retries_exhausted": 2}) and stats.results == 2
    letters = [DeadLetter.from_bytes(value) for value in read_topic(settings.dead_letter_topic, 2)]
    assert {letter.frame_id for letter in letters} == poison
    assert all("RuntimeError: CUDA out of memory" in letter.detail for letter in letters)
    results = [InspectionResult.from_bytes(value) for value in read_topic(settings.results_topic, 2)]
    assert {result.frame_id for result in results} == {"f0", "f3"}
