"""Rebalances, close in any state, dead-letter replay and S3 error classification, on the real broker and S3."""

from __future__ import annotations

import io
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from types import ModuleType

import numpy as np
import pytest
from kafka import KafkaProducer
from minio.error import S3Error
from PIL import Image

from services.consumer.dead_letters import replay_dead_letters
from services.consumer.frame_consumer import FrameConsumer
from services.protocol.outcomes import DecodedFrame, InspectionOutcome
from services.protocol.messages import DeadLetterReason, InspectionRequest, InspectionResult
from services.storage.object_store import ObjectStore
from services.storage.retry import RetryPolicy
from services.producer.frame_producer import FrameProducer
from services.settings import ServiceSettings

pytestmark = pytest.mark.integration

NOW = datetime(2026, 3, 1, 8, 0, tzinfo=timezone.utc)


def _png(seed: int) -> bytes:
    pixels = np.clip(128 + np.random.default_rng(seed).normal(0, 2, (24, 24, 3)), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _send(settings: ServiceSettings, count: int, first: int = 0) -> set[str]:
    with FrameProducer(settings) as producer:
        # Six lines: keyed by domain/line, the frames spread over the topic's three partitions.
        return {producer.send_image(_png(i), "washer", f"line-{i % 6}", f"f-{i:03d}", timestamp=NOW).frame_id
                for i in range(first, first + count)}  # fmt: skip


def _stored(store: ObjectStore, settings: ServiceSettings) -> set[str]:
    return {key.split("/")[-2] for key in store.list_keys(settings.results_bucket, "results/") if key.endswith("result.json")}


def _wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.1)


class _Member:
    """A FrameConsumer running in a thread, keeping whatever its loop raised."""

    def __init__(self, consumer: FrameConsumer) -> None:
        self.consumer = consumer
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.consumer.run(idle_timeout_s=120)
        except BaseException as error:  # the test asserts there is none
            self.errors.append(error)

    def finish(self) -> None:
        self.consumer.stop()
        self.thread.join(timeout=60)
        self.consumer.close()


def test_a_member_joining_mid_stream_loses_nothing_and_duplicates_no_committed_frame(
    service_settings: ServiceSettings,
    object_store: ObjectStore,
    statistics_inspector: ModuleType,
    read_topic: Callable[..., list[bytes]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = service_settings.model_copy(update={"max_poll_records": 3, "max_in_flight": 6})
    frames = _send(settings, 60)

    def slow(frames_: Sequence[DecodedFrame]) -> list[InspectionOutcome]:
        time.sleep(0.3)  # 60 frames take the first member about 6 s: the join lands while batches are in flight
        return statistics_inspector.inspect_by_statistics(frames_)

    caplog.set_level(logging.WARNING)
    first = _Member(FrameConsumer.connect(settings, slow, object_store, client_id="member-a"))
    second: _Member | None = None
    try:
        _wait_for(lambda: len(_stored(object_store, settings)) >= 6, 60, "the first member's first results")
        second = _Member(FrameConsumer.connect(settings, slow, object_store, client_id="member-b"))  # a rebalance
        _wait_for(second.consumer.joined_group, 60, "the second member's join")
        # Frames sent after the join spread over both members' partitions, however fast the first one was.
        frames |= _send(settings, 30, first=60)
        _wait_for(lambda: _stored(object_store, settings) == frames, 120, "every frame's result")
    finally:
        for member in (first, second):
            if member is not None:
                member.finish()
    assert first.errors == [] and second is not None and second.errors == []
    assert second.consumer.stats.results > 0
    events = Counter(InspectionResult.from_bytes(v).frame_id for v in read_topic(settings.results_topic, len(frames) + 20, 10))
    assert set(events) == frames
    assert [frame for frame, count in events.items() if count > 1] == []
    assert "User rebalance callback throws an error" not in caplog.text
    assert "Cannot block on net.run() from the IO thread" not in caplog.text


def test_close_while_a_batch_is_in_flight_returns_cleanly_and_loses_nothing(
    service_settings: ServiceSettings,
    object_store: ObjectStore,
    statistics_inspector: ModuleType,
) -> None:
    settings = service_settings.model_copy(update={"max_poll_records": 4, "max_in_flight": 8})
    frames = _send(settings, 12)
    inspecting = threading.Event()

    def slow(frames_: Sequence[DecodedFrame]) -> list[InspectionOutcome]:
        inspecting.set()
        time.sleep(1.0)
        return statistics_inspector.inspect_by_statistics(frames_)

    member = _Member(FrameConsumer.connect(settings, slow, object_store))
    assert inspecting.wait(30)
    started = time.monotonic()
    member.consumer.close()  # from another thread, mid-batch: must neither raise nor hang
    member.consumer.close()  # and again
    member.thread.join(timeout=30)
    assert time.monotonic() - started < 30 and not member.thread.is_alive()
    assert member.errors == []

    never_ran = FrameConsumer.connect(settings, slow, object_store)
    never_ran.close()
    with FrameConsumer.connect(settings, statistics_inspector.inspect_by_statistics, object_store) as again:
        again.run(max_frames=len(frames), idle_timeout_s=30)
    assert _stored(object_store, settings) == frames


def test_dead_letters_are_replayed_with_their_originals(
    service_settings: ServiceSettings,
    object_store: ObjectStore,
    statistics_inspector: ModuleType,
    read_topic: Callable[..., list[bytes]],
    unique_name: Callable[[str], str],
) -> None:
    settings = service_settings.model_copy(update={"max_message_bytes": 60_000, "dead_letter_payload_max_bytes": 1000})
    big = InspectionRequest(frame_id="big", domain="washer", line="l1", timestamp=NOW,
                            image=np.random.default_rng(0).bytes(70_000)).to_bytes()  # fmt: skip
    small = b'{"frame_id": "broken'
    unknown = InspectionRequest(frame_id="unknown", domain="turbine", line="l1", timestamp=NOW, image=_png(1)).to_bytes()
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, max_request_size=20_000_000)
    for key, value in ((b"washer/l1", big), (None, small), (b"turbine/l1", unknown)):
        producer.send(settings.frames_topics[0], partition=0, key=key, value=value)
    producer.flush()
    producer.close()
    with FrameConsumer.connect(settings, statistics_inspector.inspect_by_statistics, object_store) as consumer:
        consumer.run(max_frames=3, idle_timeout_s=30)
    assert consumer.stats.dead_letters == Counter({"oversize": 1, "schema_violation": 1, "unknown_domain": 1})
    read_topic(settings.dead_letter_topic, 3)

    dry = replay_dead_letters(settings, object_store, dry_run=True, idle_s=2)
    assert dry.read == 3 and sum(dry.matched.values()) == 3 and dry.published == 0
    later = replay_dead_letters(settings, object_store, since=datetime.now(timezone.utc) + timedelta(hours=1), idle_s=2)
    assert sum(later.matched.values()) == 0

    target = unique_name("replayed")
    summary = replay_dead_letters(
        settings, object_store, reasons={DeadLetterReason.OVERSIZE, DeadLetterReason.SCHEMA_VIOLATION}, topic=target, idle_s=2
    )
    assert summary.published == 2
    assert sorted(read_topic(target, 2)) == sorted([big, small])  # the 70 kB original came back whole from S3


def test_an_s3_error_code_outside_both_lists_is_classified_by_its_status(object_store: ObjectStore, bucket_name: str) -> None:
    object_store.put_bytes(bucket_name, "x", b"abc")
    started = time.monotonic()
    with pytest.raises(S3Error) as raised:
        # SeaweedFS answers 412 PreconditionFailed, a code in neither list: a 4xx is the request's fault.
        object_store._with_retry(  # noqa: SLF001 - the retry loop itself is under test
            "conditional get", lambda: object_store._client.get_object(bucket_name, "x", request_headers={"If-Match": '"nope"'})
        )
    assert raised.value.code == "PreconditionFailed"
    assert time.monotonic() - started < 2.0  # not retried until the deadline (30 s in these settings)


def test_an_unreachable_object_store_stalls_the_consumer_instead_of_stopping_it(
    service_settings: ServiceSettings, statistics_inspector: ModuleType
) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    nowhere = ObjectStore(f"127.0.0.1:{closed_port}", "k", "s", retry=RetryPolicy(deadline_s=0.3, initial_backoff_s=0.05))
    settings = service_settings.model_copy(update={"inspect_retry_initial_backoff_s": 0.1, "inspect_retry_max_backoff_s": 0.2})
    with FrameConsumer.connect(settings, statistics_inspector.inspect_by_statistics, nowhere) as consumer:
        threading.Timer(3.0, consumer.stop).start()
        stats = consumer.run()  # returns when stopped: the outage never raised out of it
    assert stats.stalls >= 2 and consumer.metrics.stalls.labels(cause="object_store")._value.get() == stats.stalls
