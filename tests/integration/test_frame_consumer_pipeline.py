"""Pipelined micro-batches on the real broker and S3: overlap within max_in_flight, in-order finishing."""

from __future__ import annotations

import io
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from types import ModuleType

import numpy as np
import pytest
from PIL import Image

from services.consumer.frame_consumer import FrameConsumer
from services.protocol.outcomes import DecodedFrame, InspectionOutcome, InspectionUnavailable
from services.protocol.messages import DeadLetter, InspectionResult
from services.storage.object_store import ObjectStore
from services.producer.frame_producer import FrameProducer
from services.settings import ServiceSettings

pytestmark = pytest.mark.integration

NOW = datetime(2026, 3, 1, 8, 0, tzinfo=timezone.utc)


def _png(seed: int) -> bytes:
    pixels = np.clip(128 + np.random.default_rng(seed).normal(0, 2, (32, 32, 3)), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _send(settings: ServiceSettings, store: ObjectStore, count: int) -> list[str]:
    with FrameProducer(settings, store) as producer:
        return [producer.send_image(_png(i), "washer", "line-1", f"f-{i}", timestamp=NOW).frame_id for i in range(count)]


def test_batches_are_inspected_concurrently_up_to_max_in_flight(
    service_settings: ServiceSettings,
    object_store: ObjectStore,
    statistics_inspector: ModuleType,
    read_topic: Callable[..., list[bytes]],
) -> None:
    settings = service_settings.model_copy(update={"max_poll_records": 3, "max_in_flight": 6})
    sent = _send(settings, object_store, 12)
    active, most_active, lock = 0, 0, threading.Lock()

    def slow_inspect(frames: Sequence[DecodedFrame]) -> list[InspectionOutcome]:
        nonlocal active, most_active
        with lock:
            active += 1
            most_active = max(most_active, active)
        time.sleep(0.3)
        with lock:
            active -= 1
        return statistics_inspector.inspect_by_statistics(frames)

    with FrameConsumer.connect(settings, slow_inspect, object_store) as consumer:
        stats = consumer.run(max_frames=len(sent), idle_timeout_s=30)
    assert most_active == 2  # two batches of 3 fill max_in_flight=6; never more
    assert stats.results == len(sent) and stats.commits == stats.batches
    events = [InspectionResult.from_bytes(value) for value in read_topic(settings.results_topic, len(sent))]
    assert sorted(event.frame_id for event in events) == sorted(sent)


def test_a_batch_the_service_could_not_take_once_is_retried_without_loss_or_duplicates(
    service_settings: ServiceSettings,
    object_store: ObjectStore,
    statistics_inspector: ModuleType,
    read_topic: Callable[..., list[bytes]],
) -> None:
    settings = service_settings.model_copy(
        update={"max_poll_records": 3, "max_in_flight": 6, "inspect_retry_initial_backoff_s": 0.05}
    )
    sent = _send(settings, object_store, 9)
    failed = threading.Event()

    def first_call_unavailable(frames: Sequence[DecodedFrame]) -> list[InspectionOutcome]:
        if not failed.is_set():
            failed.set()
            time.sleep(0.3)  # the batch polled after it finishes first and must wait for it
            raise InspectionUnavailable("serve is restarting")
        return statistics_inspector.inspect_by_statistics(frames)

    with FrameConsumer.connect(settings, first_call_unavailable, object_store) as consumer:
        stats = consumer.run(max_frames=len(sent), idle_timeout_s=30)
    assert stats.results == len(sent) and not stats.dead_letters
    assert stats.frame_retries >= 1
    events = [InspectionResult.from_bytes(value) for value in read_topic(settings.results_topic, len(sent) + 3, 5.0)]
    assert Counter(event.frame_id for event in events) == Counter(sent)


def test_an_unreachable_service_stalls_the_stream_and_blames_no_frame(
    service_settings: ServiceSettings,
    object_store: ObjectStore,
    statistics_inspector: ModuleType,
    read_topic: Callable[..., list[bytes]],
) -> None:
    settings = service_settings.model_copy(
        update={"max_poll_records": 3, "max_in_flight": 6, "frame_max_attempts": 2,
                "inspect_retry_initial_backoff_s": 0.05, "inspect_retry_max_backoff_s": 0.2}
    )  # fmt: skip
    sent = _send(settings, object_store, 6)
    first_call: list[float] = []

    def down_for_a_while(frames: Sequence[DecodedFrame]) -> list[InspectionOutcome]:
        first_call[:] = first_call or [time.monotonic()]
        if time.monotonic() < first_call[0] + 4.0:  # far longer than frame_max_attempts retries take
            raise InspectionUnavailable("connection refused")
        return statistics_inspector.inspect_by_statistics(frames)

    with FrameConsumer.connect(settings, down_for_a_while, object_store) as consumer:
        stats = consumer.run(max_frames=len(sent), idle_timeout_s=30)
    assert not stats.dead_letters and stats.results == len(sent)
    assert stats.stalls >= 1 and stats.replays >= 1
    assert consumer.metrics.stalls.labels(cause="inspection")._value.get() == stats.stalls
    events = [InspectionResult.from_bytes(value) for value in read_topic(settings.results_topic, len(sent) + 3, 5.0)]
    assert Counter(event.frame_id for event in events) == Counter(sent)


def test_a_frame_that_always_times_out_is_dead_lettered_alone(
    service_settings: ServiceSettings,
    object_store: ObjectStore,
    statistics_inspector: ModuleType,
    read_topic: Callable[..., list[bytes]],
) -> None:
    settings = service_settings.model_copy(
        update={"max_poll_records": 4, "max_in_flight": 4, "frame_max_attempts": 3, "inspect_retry_initial_backoff_s": 0.05}
    )
    sent = _send(settings, object_store, 8)
    poison = sent[5]

    def times_out_on_poison(frames: Sequence[DecodedFrame]) -> list[InspectionOutcome]:
        if any(frame.request.frame_id == poison for frame in frames):
            raise InspectionUnavailable("no answer within 30s")  # what HttpInspectionClient raises on a timeout
        return statistics_inspector.inspect_by_statistics(frames)

    with FrameConsumer.connect(settings, times_out_on_poison, object_store) as consumer:
        stats = consumer.run(max_frames=len(sent), idle_timeout_s=30)
    assert stats.results == len(sent) - 1 and stats.dead_letters == Counter({"retries_exhausted": 1})
    letters = [DeadLetter.from_bytes(value) for value in read_topic(settings.dead_letter_topic, 1)]
    assert [letter.frame_id for letter in letters] == [poison] and "no answer within 30s" in letters[0].detail
    events = [InspectionResult.from_bytes(value) for value in read_topic(settings.results_topic, len(sent), 5.0)]
    assert Counter(event.frame_id for event in events) == Counter(set(sent) - {poison})
