"""Kafka frame consumer: decode -> inspect (injected callable) -> store objects -> publish -> commit.

Delivery is at-least-once: offsets of a micro-batch are committed only after every frame of it has its
result objects written and its result event (or dead letter) acknowledged by the broker. Object keys are
deterministic, so a replay after a crash overwrites instead of duplicating.

Micro-batches are pipelined: while one is being inspected, the previous one is written to the object
store, and the next one is polled, up to max_in_flight frames. Batches are finished (events published,
offsets committed) strictly in poll order, so a commit never covers a frame that is not yet stored.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import CommitFailedError
from kafka.structs import OffsetAndMetadata
from minio.error import S3Error
from pydantic import ValidationError

from services.messages import (
    DeadLetter,
    DeadLetterReason,
    InspectionRequest,
    InspectionResult,
)
from services.object_store import ObjectStore, parse_s3_uri
from services.result_encoding import (
    ImageDecodeError,
    ImageTooLarge,
    decode_image,
)
from services.inspection import DecodedFrame, InspectFn, InspectionOutcome, InspectionUnavailable, Rejected, Retryable
from services.metrics import ConsumerMetrics
from services.result_writer import InvalidOutcomeError, write_result
from services.settings import ServiceSettings

logger = logging.getLogger(__name__)

_SEND_TIMEOUT_S = 30.0
# Wait before re-polling a batch the inspection service could not take; doubles up to the cap.
_REPLAY_BACKOFF_S = 1.0
_REPLAY_BACKOFF_MAX_S = 30.0


@dataclass
class ConsumerStats:
    """Running counts of one consumer."""

    polled: int = 0
    results: int = 0
    dead_letters: Counter[str] = field(default_factory=Counter)
    batches: int = 0
    commits: int = 0
    replays: int = 0

    @property
    def handled(self) -> int:
        """Frames that got a result or a dead letter."""
        return self.results + sum(self.dead_letters.values())

    def log_fields(self) -> dict[str, object]:
        """Flat fields for structured log records."""
        return {
            "polled": self.polled,
            "results": self.results,
            "dead_letters": dict(self.dead_letters),
            "batches": self.batches,
            "commits": self.commits,
            "replays": self.replays,
        }


class _GroupMembership(ConsumerRebalanceListener):
    """Tracks whether the consumer currently holds a completed group assignment (possibly empty).

    Before partitions are given up, `before_revoke` finishes the batches in flight so their offsets are
    committed by this member instead of being replayed by the next owner.
    """

    def __init__(self, before_revoke: Callable[[], None]) -> None:
        self.joined = threading.Event()
        self._before_revoke = before_revoke

    def on_partitions_revoked(self, revoked: object) -> None:
        self.joined.clear()
        self._before_revoke()

    def on_partitions_assigned(self, assigned: object) -> None:
        # Called after every completed join, also with no partitions: an idle member is still healthy.
        self.joined.set()


@dataclass(frozen=True)
class _BatchHandled:
    """A micro-batch with its objects written: what is left to publish before its offsets are committed."""

    results: list[InspectionResult]
    dead: list[DeadLetter]


@dataclass(frozen=True)
class _InFlightBatch:
    records: Sequence[ConsumerRecord]
    polled_at: float
    handled: Future[_BatchHandled]


class _Rejected(Exception):
    def __init__(self, reason: DeadLetterReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _validation_summary(error: ValidationError) -> str:
    parts = []
    for item in error.errors()[:5]:
        location = ".".join(str(part) for part in item["loc"]) or "message"
        parts.append(f"{location}: {item['msg']}")
    return "; ".join(parts)


class FrameConsumer:
    """Consumes InspectionRequest messages in a consumer group and turns each into a stored result."""

    def __init__(
        self,
        settings: ServiceSettings,
        inspect: InspectFn,
        store: ObjectStore | None = None,
        known_domains: Callable[[str], bool] | None = None,
        client_id: str = "inctrl-frame-consumer",
        metrics: ConsumerMetrics | None = None,
    ) -> None:
        self._settings = settings
        self._inspect = inspect
        self._known_domains = known_domains
        self.metrics = metrics or ConsumerMetrics()
        self._store = store or ObjectStore.from_settings(settings)
        self._store.ensure_bucket(settings.results_bucket)
        connection = settings.kafka_client_options()
        self._consumer = KafkaConsumer(
            **connection,
            group_id=settings.consumer_group,
            client_id=client_id,
            enable_auto_commit=False,
            auto_offset_reset=settings.auto_offset_reset,
            session_timeout_ms=settings.session_timeout_ms,
            heartbeat_interval_ms=settings.heartbeat_interval_ms,
            max_poll_records=min(settings.max_poll_records, settings.max_in_flight),
        )
        self._membership = _GroupMembership(before_revoke=self._finish_in_flight)
        self._consumer.subscribe(settings.frames_topics, listener=self._membership)
        self._producer = KafkaProducer(
            **connection,
            client_id=client_id,
            acks="all",
            linger_ms=5,
            max_request_size=settings.max_message_bytes,
        )
        self._workers = ThreadPoolExecutor(settings.s3_write_concurrency, thread_name_prefix="frame-io")
        batch_cap = min(settings.max_poll_records, settings.max_in_flight)
        # One thread per micro-batch that max_in_flight lets be in flight at once (at least two, so that
        # one batch is inspected while the one before it is stored).
        self._pipeline = ThreadPoolExecutor(
            max(2, -(-settings.max_in_flight // batch_cap)), thread_name_prefix="frame-batch"
        )
        self._in_flight: deque[_InFlightBatch] = deque()
        self._stop = threading.Event()
        self._closed = False
        self._last_poll_at = time.monotonic()
        self.stats = ConsumerStats()

    # -- health -----------------------------------------------------------------------------------------
    def seconds_since_poll(self) -> float:
        """Time since the loop last returned from a poll (since construction before the first one)."""
        return time.monotonic() - self._last_poll_at

    def joined_group(self) -> bool:
        """Whether the consumer holds a completed group assignment (it may have no partitions)."""
        return self._membership.joined.is_set() and not self._closed

    # -- lifecycle --------------------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the loop to finish: the batch in hand is completed and committed, then run() returns."""
        self._stop.set()

    def close(self) -> None:
        """Leave the group and release connections; uncommitted records are redelivered to others."""
        if self._closed:
            return
        self._closed = True
        self._pipeline.shutdown(wait=True)
        self._workers.shutdown(wait=True)
        self._producer.flush()
        self._producer.close()
        self._consumer.close(autocommit=False)
        logger.info("frame consumer closed", extra=self.stats.log_fields())

    def __enter__(self) -> FrameConsumer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def run_forever(self) -> ConsumerStats:
        """Consume until stop() or SIGTERM/SIGINT, then drain, commit and close."""
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda signum, frame: self.stop())
        try:
            return self.run()
        finally:
            self.close()

    def run(self, max_frames: int | None = None, idle_timeout_s: float | None = None) -> ConsumerStats:
        """Consume until stop(), until max_frames frames are handled, or until no record came for idle_timeout_s.

        Batches still in flight when the loop ends are finished (stored, published, committed) first.
        """
        batch_cap = min(self._settings.max_poll_records, self._settings.max_in_flight)
        idle_since = time.monotonic()
        replay_backoff = _REPLAY_BACKOFF_S
        while not self._stop.is_set():
            finished_before = self.stats.batches
            try:
                self._finish_ready_batches()
                in_flight = self._frames_in_flight()
                room = min(batch_cap, self._settings.max_in_flight - in_flight)
                if max_frames is not None:
                    room = min(room, max_frames - self.stats.handled - in_flight)
                if room <= 0 and not self._in_flight:
                    break  # max_frames handled
                if room <= 0:
                    self._finish_oldest_batch()
                    continue
                # With batches in flight, take only records already fetched: waiting here would delay their commit.
                timeout_ms = 0 if self._in_flight else self._settings.poll_timeout_ms
                polled = self._consumer.poll(timeout_ms=timeout_ms, max_records=room)
                self._last_poll_at = time.monotonic()
                records = [record for batch in polled.values() for record in batch]
                if records:
                    self._start_batch(records)
                    idle_since = time.monotonic()
                elif self._in_flight:
                    self._finish_oldest_batch()
                elif idle_timeout_s is not None and time.monotonic() - idle_since >= idle_timeout_s:
                    break
            except InspectionUnavailable:
                self._stop.wait(replay_backoff)
                replay_backoff = min(2 * replay_backoff, _REPLAY_BACKOFF_MAX_S)
                continue
            if self.stats.batches > finished_before:
                replay_backoff = _REPLAY_BACKOFF_S
        self._finish_in_flight()
        logger.info("frame consumer loop ended", extra=self.stats.log_fields())
        return self.stats

    def _frames_in_flight(self) -> int:
        return sum(len(batch.records) for batch in self._in_flight)

    def _start_batch(self, records: Sequence[ConsumerRecord]) -> None:
        polled_at = time.monotonic()
        self.stats.polled += len(records)
        self.metrics.consumed.inc(len(records))
        handled = self._pipeline.submit(self._inspect_and_store, records, polled_at)
        self._in_flight.append(_InFlightBatch(records, polled_at, handled))

    def _finish_ready_batches(self) -> None:
        while self._in_flight and self._in_flight[0].handled.done():
            self._finish_oldest_batch()

    def _finish_oldest_batch(self) -> None:
        """Wait for the oldest batch, publish its events and commit it.

        When the inspection service was unreachable for it, every later batch is abandoned too (its objects
        may be written; nothing of it is published or committed), all of them are rewound for replay, and
        InspectionUnavailable is raised.
        """
        batch = self._in_flight.popleft()
        try:
            handled = batch.handled.result()
        except InspectionUnavailable as error:
            abandoned = [batch, *self._in_flight]
            self._in_flight.clear()
            for later in abandoned[1:]:
                later.handled.exception()  # wait: its threads must be done before the replay starts
            self._rewind([record for item in abandoned for record in item.records], error)
            raise
        self._publish(handled.results, handled.dead)
        self._commit(batch.records)
        self._record_batch(batch, handled)

    def _finish_in_flight(self) -> None:
        """Finish every batch in flight; an unreachable inspection service leaves the rest uncommitted."""
        try:
            while self._in_flight:
                self._finish_oldest_batch()
        except InspectionUnavailable:
            logger.warning("batches left uncommitted for replay", extra=self.stats.log_fields())

    def _rewind(self, records: Sequence[ConsumerRecord], error: InspectionUnavailable) -> None:
        """Seek back to the batch's first offsets so the next polls deliver it again (nothing committed)."""
        first: dict[TopicPartition, int] = {}
        for record in records:
            partition = TopicPartition(record.topic, record.partition)
            first[partition] = min(first.get(partition, record.offset), record.offset)
        owned = self._consumer.assignment()
        for partition, offset in first.items():
            # A partition revoked meanwhile is replayed by its new owner from the committed offset.
            if partition in owned:
                self._consumer.seek(partition, offset)
        self.stats.replays += 1
        self.metrics.replayed_batches.inc()
        logger.warning(
            "inspection service unavailable, batch will be replayed",
            extra={"error": str(error), "batch_size": len(records), **self.stats.log_fields()},
        )

    # -- one micro-batch --------------------------------------------------------------------------------
    def process_batch(self, records: Sequence[ConsumerRecord]) -> None:
        """Handle polled records end to end and commit their offsets (no pipelining; for one-off batches).

        Raises InspectionUnavailable, before anything is written or committed, when the inspect callable
        cannot reach its service; the batch is then rewound for replay.
        """
        self._start_batch(records)
        while self._in_flight:
            self._finish_oldest_batch()

    def _inspect_and_store(self, records: Sequence[ConsumerRecord], polled_at: float) -> _BatchHandled:
        """Decode, inspect and write the objects of one batch (runs on a pipeline thread)."""
        decoded = list(self._workers.map(self._decode, records))
        frames = [(record, item) for record, item in zip(records, decoded) if isinstance(item, DecodedFrame)]
        dead = [
            self._dead_letter(record, item.reason, item.detail)
            for record, item in zip(records, decoded)
            if isinstance(item, _Rejected)
        ]
        outcomes = self._inspect_safely([frame for _, frame in frames])
        stored = list(
            self._workers.map(lambda pair, outcome: self._store_result(pair, outcome, polled_at), frames, outcomes)
        )
        results = [item for item in stored if isinstance(item, InspectionResult)]
        dead += [item for item in stored if isinstance(item, DeadLetter)]
        return _BatchHandled(results, dead)

    def _record_batch(self, batch: _InFlightBatch, handled: _BatchHandled) -> None:
        results, dead = handled.results, handled.dead
        self.stats.batches += 1
        self.stats.results += len(results)
        self.stats.dead_letters.update(letter.reason.value for letter in dead)
        for result in results:
            self.metrics.results.labels(verdict=result.verdict.value).inc()
        for letter in dead:
            self.metrics.dead_letters.labels(reason=letter.reason.value).inc()
        self.metrics.batch_size.observe(len(batch.records))
        self.metrics.batch_latency.observe(time.monotonic() - batch.polled_at)
        logger.info(
            "batch done",
            extra={"batch_size": len(batch.records), "batch_results": len(results), "batch_dead_letters": len(dead),
                   "batch_ms": round(1000 * (time.monotonic() - batch.polled_at), 1), **self.stats.log_fields()},
        )  # fmt: skip

    def _decode(self, record: ConsumerRecord) -> DecodedFrame | _Rejected:
        settings = self._settings
        payload = record.value
        try:
            if not payload:
                raise _Rejected(DeadLetterReason.SCHEMA_VIOLATION, "empty message value")
            if len(payload) > settings.max_message_bytes:
                raise _Rejected(
                    DeadLetterReason.OVERSIZE,
                    f"message is {len(payload)} bytes, above the limit of {settings.max_message_bytes}",
                )
            try:
                request = InspectionRequest.from_bytes(payload)
            except ValidationError as error:
                raise _Rejected(DeadLetterReason.SCHEMA_VIOLATION, _validation_summary(error)) from error
            if self._known_domains is not None and not self._known_domains(request.domain):
                raise _Rejected(DeadLetterReason.UNKNOWN_DOMAIN, f"domain {request.domain!r} is not registered")
            image_bytes = request.image if request.image is not None else self._fetch_image(request.image_uri or "")
            try:
                image = decode_image(image_bytes, max_pixels=settings.max_image_pixels)
            except ImageTooLarge as error:
                raise _Rejected(DeadLetterReason.OVERSIZE, str(error)) from error
            except ImageDecodeError as error:
                raise _Rejected(DeadLetterReason.UNDECODABLE_IMAGE, str(error)) from error
        except _Rejected as rejected:
            return rejected
        return DecodedFrame(request=request, image=image, encoded=image_bytes)

    def _fetch_image(self, uri: str) -> bytes:
        bucket, key = parse_s3_uri(uri)
        try:
            return self._store.get_bytes(bucket, key)
        except S3Error as error:
            # Missing objects are bad input; an unreachable store raises ObjectStoreUnavailable instead.
            raise _Rejected(DeadLetterReason.UNDECODABLE_IMAGE, f"cannot read {uri}: {error.code}") from error

    def _inspect_safely(self, frames: list[DecodedFrame]) -> list[InspectionOutcome]:
        if not frames:
            return []
        try:
            outcomes = list(self._inspect(frames))
        except InspectionUnavailable:
            raise
        except Exception as error:  # the detector's failure must not stop the stream
            logger.exception("inspect callable failed", extra={"frames": len(frames)})
            return [Rejected(DeadLetterReason.INFERENCE_ERROR, f"{type(error).__name__}: {error}")] * len(frames)
        if len(outcomes) != len(frames):
            detail = f"inspect returned {len(outcomes)} outcomes for {len(frames)} frames"
            return [Rejected(DeadLetterReason.INFERENCE_ERROR, detail)] * len(frames)
        return outcomes

    def _store_result(
        self, pair: tuple[ConsumerRecord, DecodedFrame], outcome: InspectionOutcome, polled_at: float
    ) -> InspectionResult | DeadLetter:
        record, frame = pair
        if isinstance(outcome, Rejected):
            return self._dead_letter(record, outcome.reason, outcome.detail)
        if isinstance(outcome, Retryable):
            # Until the consumer retries single frames, a frame-level infrastructure failure replays the batch.
            raise InspectionUnavailable(f"frame {frame.request.frame_id}: {outcome.detail}")
        try:
            return write_result(
                frame.request, frame.image, outcome, polled_at, self._settings.results_bucket, self._store,
                self._settings.overlay_jpeg_quality,
            )  # fmt: skip
        except InvalidOutcomeError as error:
            return self._dead_letter(record, DeadLetterReason.INFERENCE_ERROR, f"invalid outcome: {error}")

    def _dead_letter(self, record: ConsumerRecord, reason: DeadLetterReason, detail: str) -> DeadLetter:
        payload = record.value or b""
        cap = self._settings.dead_letter_payload_max_bytes
        logger.warning(
            "frame dead-lettered",
            extra={"reason": reason.value, "detail": detail, "topic": record.topic,
                   "partition": record.partition, "offset": record.offset},
        )  # fmt: skip
        return DeadLetter(
            reason=reason,
            detail=detail,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key.decode(errors="replace") if record.key else None,
            payload=payload[:cap],
            payload_size=len(payload),
            payload_truncated=len(payload) > cap,
            frame_id=_frame_id_hint(payload),
        )

    def _publish(self, results: list[InspectionResult], dead: list[DeadLetter]) -> None:
        futures = [
            self._producer.send(self._settings.results_topic, key=f"{r.domain}/{r.line}".encode(), value=r.to_bytes())
            for r in results
        ]
        futures += [
            self._producer.send(self._settings.dead_letter_topic, key=(d.key or "").encode() or None, value=d.to_bytes())
            for d in dead
        ]
        self._producer.flush(timeout=_SEND_TIMEOUT_S)
        for future in futures:
            # Raises on a failed send: the batch is then not committed and will be replayed.
            future.get(timeout=_SEND_TIMEOUT_S)

    def _commit(self, records: Sequence[ConsumerRecord]) -> None:
        next_offsets: dict[TopicPartition, int] = {}
        for record in records:
            partition = TopicPartition(record.topic, record.partition)
            next_offsets[partition] = max(next_offsets.get(partition, 0), record.offset + 1)
        try:
            self._consumer.commit({tp: OffsetAndMetadata(offset, "", -1) for tp, offset in next_offsets.items()})
        except CommitFailedError as error:
            # The group rebalanced meanwhile; the new owner replays these frames and overwrites the same keys.
            logger.warning("offset commit failed after rebalance", extra={"error": str(error)})
            return
        self.stats.commits += 1
        self.metrics.committed.inc(len(records))


def _frame_id_hint(payload: bytes) -> str | None:
    try:
        document = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    frame_id = document.get("frame_id") if isinstance(document, dict) else None
    return frame_id if isinstance(frame_id, str) and len(frame_id) <= 256 else None
