"""Kafka frame consumer: decode -> inspect (injected callable) -> store objects -> publish -> commit.

Delivery is at-least-once: offsets of a micro-batch are committed only after every frame of it has its
result objects written and its result event (or dead letter) acknowledged by the broker. Object keys are
deterministic, so a replay after a crash overwrites instead of duplicating.

Micro-batches are pipelined: while one is being inspected, the previous one is written to the object
store, and the next one is polled, up to max_in_flight frames and max_in_flight_bytes. Batches are
finished (events published, offsets committed) strictly in poll order, so a commit never covers a frame
that is not yet stored.

Failure policy (DESIGN.md, failure taxonomy):
- Whatever one record contains ends as a result or a dead letter with a reason (FrameRecordDecoder, and a
  catch-all around storing); the offset moves on.
- Infrastructure trouble (InspectionUnavailable, ObjectStoreUnavailable, a broker error) stalls the
  stream: the batches in flight are abandoned (nothing of them published or committed), rewound, and
  polled again after a RetryPolicy wait. Nothing is dead-lettered for it.
- A frame whose inspection keeps failing while the service serves others (Retryable outcomes, errors,
  or unavailability of its call while other calls succeed) is isolated: after a failed whole-batch call
  the frames are tried one by one, and a frame is dead-lettered alone as retries_exhausted after
  frame_max_attempts failed attempts; its batch-mates get their results. While nobody is served, no
  frame is blamed: the stream stalls.
- Rebalances: the listener runs on kafka-python's IO thread (3.0.12 calls it from the coordinator's
  coroutine, inside poll() or close()), where blocking stops heartbeats and commit() is refused. It only
  counts the revocation. poll() is the only place a revocation can happen, so the loop compares the count
  around each poll: when it moved, every batch in flight and the records just polled are abandoned and
  rewound, so nothing uncommitted is published twice; the new owner of a revoked partition replays it
  from the last commit.
"""

from __future__ import annotations

import hashlib
import logging
import signal
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from typing import Any
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata
from pydantic import ValidationError

import torch

from model import InvalidImageError
from services.consumer.dead_letters import DeadLetterBuilder
from services.consumer.frame_records import FrameRecordDecoder, RecordRejected, shorten
from services.protocol.outcomes import DecodedFrame, InspectFn, InspectionUnavailable, Rejected, Retryable, Scored
from services.protocol.messages import DeadLetter, DeadLetterReason, InspectionResult
from services.metrics import ConsumerMetrics
from services.results.keys import result_keys
from services.storage.object_store import ObjectStore, ObjectStoreUnavailable
from services.storage.retry import RetryPolicy
from services.consumer.kafka_clients import KafkaClients
from services.consumer.stage_clock import StageClock
from services.imaging.geometry import DEFAULT_MAX_ASPECT_RATIO, prepare_frame
from services.results.writer import InvalidOutcomeError, encode_result, store_result
from services.settings import ServiceSettings

logger = logging.getLogger(__name__)

_SEND_TIMEOUT_S = 30.0
_CLOSE_TIMEOUT_MS = 10_000
_DETAIL_CHARS = 500
# Failures that are nobody's input fault: the stream stalls and retries, nothing is dead-lettered for them.
_INFRASTRUCTURE = (InspectionUnavailable, ObjectStoreUnavailable, KafkaError)


def limit_torch_threads() -> None:
    """One torch thread per consumer thread: the consumer already runs frames in parallel in its pools, and
    torch's intra-op threads then only contend (a 64 -> 256 map restore measured 7.9 ms with 2 threads on
    2 busy cores, 0.14 ms with 1). Process-wide: call it where a process starts consuming."""
    torch.set_num_threads(1)


def _batch_cap(settings: ServiceSettings) -> int:
    """Records per poll: never more than may be in flight."""
    return min(settings.max_poll_records, settings.max_in_flight)


def _cause(error: BaseException) -> str:
    if isinstance(error, InspectionUnavailable):
        return "inspection"
    if isinstance(error, ObjectStoreUnavailable):
        return "object_store"
    if isinstance(error, KafkaError):
        return "broker"
    return "internal"


@dataclass
class ConsumerStats:
    """Running counts of one consumer."""

    polled: int = 0
    results: int = 0
    dead_letters: Counter[str] = field(default_factory=Counter)
    batches: int = 0
    commits: int = 0
    replays: int = 0
    stalls: int = 0
    frame_retries: int = 0

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
            "stalls": self.stalls,
            "frame_retries": self.frame_retries,
        }


class _GroupMembership(ConsumerRebalanceListener):
    """Counts revocations and tracks whether the consumer holds a completed group assignment.

    Runs on kafka-python's IO thread: it must neither block nor call the consumer (see the module docstring).
    """

    def __init__(self) -> None:
        self.joined = threading.Event()
        self.revocations = 0

    def on_partitions_revoked(self, revoked: object) -> None:
        self.joined.clear()
        self.revocations += 1

    def on_partitions_lost(self, lost: object) -> None:
        self.on_partitions_revoked(lost)

    def on_partitions_assigned(self, assigned: object) -> None:
        # Called after every completed join, also with no partitions: an idle member is still healthy.
        self.joined.set()


@dataclass(frozen=True)
class _BatchHandled:
    """A micro-batch with its objects written: what is left to publish before its offsets are committed."""

    results: list[InspectionResult]
    dead: list[DeadLetter]


@dataclass
class _InFlightBatch:
    records: Sequence[ConsumerRecord]
    polled_at: float
    message_bytes: int
    handled: Future[_BatchHandled] | None = None
    decoded_bytes: int = 0  # set by the pipeline thread once the frames are decoded


class _Abandoned(Exception):
    """The consumer is stopping: a batch in isolation gives up (nothing of it is committed)."""


@dataclass(frozen=True)
class _Exhausted:
    detail: str


class FrameConsumer:
    """Consumes InspectionRequest messages in a consumer group and turns each into a stored result."""

    @classmethod
    def connect(
        cls,
        settings: ServiceSettings,
        inspect: InspectFn,
        store: ObjectStore | None = None,
        client_id: str = "inctrl-frame-consumer",
        **options: Any,  # noqa: ANN401 - the constructor's keyword options
    ) -> FrameConsumer:
        """A consumer with Kafka clients built from `settings` (and an object store, unless one is given)."""
        kafka = KafkaClients.connect(settings, client_id, _batch_cap(settings))
        try:
            return cls(settings, inspect, kafka, store or ObjectStore.from_settings(settings), **options)
        except BaseException:
            kafka.consumer.close(autocommit=False)
            kafka.producer.close(timeout=0)
            raise

    def __init__(
        self,
        settings: ServiceSettings,
        inspect: InspectFn,
        kafka: KafkaClients,
        store: ObjectStore,
        known_domains: Callable[[str], bool] | None = None,
        metrics: ConsumerMetrics | None = None,
        max_aspect_ratio: float = DEFAULT_MAX_ASPECT_RATIO,
    ) -> None:
        """Takes ownership of the Kafka clients (close() closes them); subscribes to the frames topics."""
        self._settings = settings
        self._inspect = inspect
        # The inspect callable's health probe, when it has one: tells a frame's failures from an outage.
        self._probe: Callable[[], bool] | None = getattr(inspect, "reachable", None)
        # A remote service's input size: frames are then sent prepared, at the backbone's geometry.
        self._input_size: Callable[[], int] | None = getattr(inspect, "input_size", None)
        self._max_aspect_ratio = max_aspect_ratio
        self.metrics = metrics or ConsumerMetrics()
        self.clock = StageClock(lambda stage, seconds: self.metrics.stage_cpu.labels(stage=stage).inc(seconds))
        self._retry = RetryPolicy(
            initial_backoff_s=settings.inspect_retry_initial_backoff_s,
            max_backoff_s=settings.inspect_retry_max_backoff_s,
        )
        self._store = store
        self._buckets_ready = False  # made sure of by the loop, so that an unreachable store stalls, not fails
        self._decoder = FrameRecordDecoder(settings, self._store, known_domains)
        self._letters = DeadLetterBuilder(settings, self._store)
        self._membership = _GroupMembership()
        self._stop = threading.Event()
        self._closed = False
        self._close_lock = threading.Lock()
        self._in_flight: deque[_InFlightBatch] = deque()
        self._last_poll_at = time.monotonic()
        self._last_served_at = 0.0  # monotonic time the inspect callable last scored or rejected a frame (any thread)
        self._key_lock = threading.Lock()
        self._keys_in_use: set[str] = set()
        self._keys_free = threading.Condition(self._key_lock)
        self.stats = ConsumerStats()
        batch_cap = _batch_cap(settings)
        self._consumer: KafkaConsumer = kafka.consumer
        self._producer: KafkaProducer = kafka.producer
        self._workers = ThreadPoolExecutor(settings.s3_write_concurrency, thread_name_prefix="frame-io")
        # One thread per micro-batch that max_in_flight lets be in flight at once (at least two, so that
        # one batch is inspected while the one before it is stored).
        self._pipeline = ThreadPoolExecutor(
            max(2, -(-settings.max_in_flight // batch_cap)), thread_name_prefix="frame-batch"
        )
        try:
            self._consumer.subscribe(settings.frames_topics, listener=self._membership)
        except BaseException:
            self.close()
            raise

    # -- health -----------------------------------------------------------------------------------------
    def seconds_since_poll(self) -> float:
        """Time since the loop last returned from a poll (since construction before the first one)."""
        return time.monotonic() - self._last_poll_at

    def joined_group(self) -> bool:
        """Whether the consumer holds a completed group assignment (it may have no partitions)."""
        return self._membership.joined.is_set() and not self._closed

    # -- lifecycle --------------------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the loop to finish: batches already inspected are committed, the rest left for replay."""
        self._stop.set()

    def close(self) -> None:
        """Leave the group and release connections, whatever state the consumer is in; never raises.

        Uncommitted records are redelivered to whoever owns their partitions next.
        """
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self._stop.set()
        steps: list[tuple[str, Callable[[], object]]] = [
            ("pipeline", lambda: self._pipeline.shutdown(wait=True, cancel_futures=True)),
            ("object writers", lambda: self._workers.shutdown(wait=True, cancel_futures=True)),
        ]
        consumer, producer = self._consumer, self._producer
        steps.append(("kafka consumer", lambda: consumer.close(autocommit=False)))
        steps.append(("kafka producer", lambda: producer.close(timeout=_CLOSE_TIMEOUT_MS / 1000)))
        for name, step in steps:
            try:
                step()
            except Exception:  # closing must go on: the remaining resources still need releasing
                logger.exception("closing the frame consumer's %s failed", name)
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

        Batches already inspected when the loop ends are finished (published, committed); the rest are left
        uncommitted for replay.
        """
        settings = self._settings
        batch_cap = min(settings.max_poll_records, settings.max_in_flight)
        idle_since = time.monotonic()
        stalls_in_a_row = 0
        while not self._stop.is_set():
            finished_before = self.stats.batches
            try:
                if not self._buckets_ready:
                    self._store.ensure_bucket(settings.results_bucket)
                    self._buckets_ready = True
                self._finish_ready_batches()
                in_flight = self._frames_in_flight()
                room = min(batch_cap, settings.max_in_flight - in_flight)
                if max_frames is not None:
                    room = min(room, max_frames - self.stats.handled - in_flight)
                if room <= 0 and not self._in_flight:
                    break  # max_frames handled
                if room <= 0 or self._bytes_in_flight() >= settings.max_in_flight_bytes:
                    self._finish_oldest_batch()
                    continue
                # With batches in flight, take only records already fetched: waiting here would delay their commit.
                timeout_ms = 0 if self._in_flight else settings.poll_timeout_ms
                revocations = self._membership.revocations
                polled = self._consumer.poll(timeout_ms=timeout_ms, max_records=room)
                self._last_poll_at = time.monotonic()
                records = [record for batch in polled.values() for record in batch]
                if self._membership.revocations != revocations:
                    self._abandon(records, "partitions revoked")
                    continue
                if records:
                    self._start_batch(records)
                    idle_since = time.monotonic()
                elif self._in_flight:
                    self._finish_oldest_batch()
                elif idle_timeout_s is not None and time.monotonic() - idle_since >= idle_timeout_s:
                    break
            except Exception as error:  # infrastructure, or a fault of ours outside any one record: never exit
                if self._closed:
                    break
                if not isinstance(error, _INFRASTRUCTURE):
                    logger.exception("unexpected error in the consumer loop")
                    self._abandon([], f"unexpected {type(error).__name__}")
                stalls_in_a_row += 1
                self._stall(error, stalls_in_a_row)
                continue
            if self.stats.batches > finished_before:
                stalls_in_a_row = 0
        if not self._closed:  # closed from another thread: its clients are gone, the batches are left for replay
            self._finish_inspected()
        logger.info("frame consumer loop ended", extra=self.stats.log_fields())
        return self.stats

    def _stall(self, error: BaseException, in_a_row: int) -> None:
        wait_s = self._retry.delay_s(in_a_row)
        cause = _cause(error)
        self.stats.stalls += 1
        self.metrics.stalls.labels(cause=cause).inc()
        logger.warning(
            "infrastructure unavailable, stream stalled; batches rewound for replay",
            extra={"cause": cause, "error": shorten(str(error), _DETAIL_CHARS), "error_type": type(error).__name__,
                   "stalls_in_a_row": in_a_row, "wait_s": wait_s, **self.stats.log_fields()},
        )  # fmt: skip
        self._stop.wait(wait_s)

    def _frames_in_flight(self) -> int:
        return sum(len(batch.records) for batch in self._in_flight)

    def _bytes_in_flight(self) -> int:
        return sum(batch.message_bytes + batch.decoded_bytes for batch in self._in_flight)

    def _start_batch(self, records: Sequence[ConsumerRecord]) -> None:
        self.stats.polled += len(records)
        self.metrics.consumed.inc(len(records))
        batch = _InFlightBatch(records, time.monotonic(), sum(len(record.value or b"") for record in records))
        batch.handled = self._pipeline.submit(self._inspect_and_store_safely, batch)
        self._in_flight.append(batch)

    def _finish_ready_batches(self) -> None:
        while self._in_flight and self._in_flight[0].handled is not None and self._in_flight[0].handled.done():
            self._finish_oldest_batch()

    def _finish_oldest_batch(self) -> None:
        """Wait for the oldest batch, publish its events and commit it.

        On infrastructure trouble every batch in flight is abandoned (its objects may be written; nothing of
        it is published or committed) and rewound for replay, and the error is raised.
        """
        batch = self._in_flight[0]
        assert batch.handled is not None
        try:
            handled = batch.handled.result()
            with self.clock.stage("publish"):
                self._publish(handled.results, handled.dead)
        except _INFRASTRUCTURE as error:
            self._abandon([], f"{type(error).__name__}: {shorten(str(error), _DETAIL_CHARS)}")
            raise
        except _Abandoned:
            self._abandon([], "consumer stopping")
            return
        self._in_flight.popleft()
        with self.clock.stage("commit"):
            self._commit(batch.records)
        self._record_batch(batch, handled)

    def _finish_inspected(self) -> None:
        """At the end of the loop: finish the batches already inspected, in order; leave the rest for replay."""
        try:
            while self._in_flight and self._in_flight[0].handled is not None and self._in_flight[0].handled.done():
                self._finish_oldest_batch()
        except _INFRASTRUCTURE as error:
            logger.warning("batches left uncommitted for replay", extra={"error": str(error), **self.stats.log_fields()})
        if self._in_flight:
            self._abandon([], "consumer stopping")

    def _abandon(self, polled: Sequence[ConsumerRecord], why: str) -> None:
        """Give up every batch in flight and the records just polled: wait for their threads, then rewind."""
        batches = list(self._in_flight)
        self._in_flight.clear()
        for batch in batches:
            if batch.handled is not None and not batch.handled.cancelled():
                batch.handled.exception()  # wait: its threads must be done before the replay starts
        records = [record for batch in batches for record in batch.records] + list(polled)
        if records and not self._closed:
            self._rewind(records, why)

    def _rewind(self, records: Sequence[ConsumerRecord], why: str) -> None:
        """Seek back to the first offsets of the records so the next polls deliver them again (nothing committed)."""
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
        logger.warning("records rewound for replay", extra={"why": why, "records": len(records), **self.stats.log_fields()})

    # -- one micro-batch --------------------------------------------------------------------------------
    def process_batch(self, records: Sequence[ConsumerRecord]) -> None:
        """Handle polled records end to end and commit their offsets (no pipelining; for one-off batches).

        Raises on infrastructure trouble, before anything is published or committed; the batch is then
        rewound for replay.
        """
        if not self._buckets_ready:
            self._store.ensure_bucket(self._settings.results_bucket)
            self._buckets_ready = True
        self._start_batch(records)
        while self._in_flight:
            self._finish_oldest_batch()

    def _inspect_and_store_safely(self, batch: _InFlightBatch) -> _BatchHandled:
        """_inspect_and_store, with a fault of ours dead-lettering the batch's records (originals kept) instead
        of stopping the consumer; infrastructure trouble still propagates for a stall."""
        try:
            return self._inspect_and_store(batch)
        except (*_INFRASTRUCTURE, _Abandoned):
            raise
        except Exception as error:
            logger.exception("handling a micro-batch failed", extra={"batch_size": len(batch.records)})
            detail = f"handling its batch failed: {type(error).__name__}: {shorten(str(error), _DETAIL_CHARS)}"
            return _BatchHandled([], [self._letters.build(r, DeadLetterReason.INTERNAL_ERROR, detail) for r in batch.records])

    def _inspect_and_store(self, batch: _InFlightBatch) -> _BatchHandled:
        """Decode, inspect and write the objects of one batch (runs on a pipeline thread)."""
        records = batch.records
        decoded = list(self._workers.map(self._decode, records))
        batch.decoded_bytes = sum(
            item.image.nbytes + (len(item.encoded) if item.request.image is None and item.encoded else 0)
            for item in decoded
            if isinstance(item, DecodedFrame)
        )
        if self._input_size is not None and any(isinstance(item, DecodedFrame) for item in decoded):
            size = self._input_size()  # InspectionUnavailable while the service cannot say: a stall, like its calls
            decoded = list(self._workers.map(lambda item: self._prepare(item, size), decoded))
        pairs = [(record, item) for record, item in zip(records, decoded) if isinstance(item, DecodedFrame)]
        dead = [
            self._letters.build(record, item.reason, item.detail)
            for record, item in zip(records, decoded)
            if isinstance(item, RecordRejected)
        ]
        with self.clock.stage("inspect"):
            outcomes = self._inspect_isolating([frame for _, frame in pairs])
        stored = list(
            self._workers.map(lambda pair, outcome: self._store_result(pair, outcome, batch.polled_at), pairs, outcomes)
        )
        results = [item for item in stored if isinstance(item, InspectionResult)]
        dead += [item for item in stored if isinstance(item, DeadLetter)]
        return _BatchHandled(results, dead)

    def _decode(self, record: ConsumerRecord) -> DecodedFrame | RecordRejected:
        with self.clock.stage("decode"):
            return self._decoder.decode(record)

    def _prepare(self, item: DecodedFrame | RecordRejected, size: int) -> DecodedFrame | RecordRejected:
        """The frame at the backbone's geometry, what a replica is sent; a frame that cannot be is rejected alone."""
        if not isinstance(item, DecodedFrame):
            return item
        with self.clock.stage("prepare"):
            try:
                pixels = prepare_frame(item.image, size, f"frame {item.request.frame_id}", self._max_aspect_ratio)
            except InvalidImageError as error:
                return RecordRejected(DeadLetterReason.INFERENCE_ERROR, str(error))
            return replace(item, pixels=pixels)

    def _inspect_isolating(self, frames: list[DecodedFrame]) -> list[Scored | Rejected | _Exhausted]:
        """Final outcomes of the frames: the whole batch first, then the frames still failing one by one.

        A failed attempt (unavailable, an error, a Retryable outcome) counts against a frame only when the
        service is shown to serve other frames meanwhile: in the same round, in another batch's call since
        the round began, or, when only failing frames are left, by a canary call with a frame of this batch
        it already served. Then the frame, not the service, is the problem. A round of single frames without
        such evidence raises InspectionUnavailable: the stream stalls and replays, and no frame is blamed.
        When the callable's health probe says the service is down, the round stops at the first failure.
        """
        final: list[Scored | Rejected | _Exhausted | None] = [None] * len(frames)
        failures = [0] * len(frames)
        pending = list(range(len(frames)))
        canary: int | None = None  # a frame of this batch the service served: evidence that it is up
        attempt_round = 0
        while pending:
            attempt_round += 1
            if attempt_round > 1:
                self.stats.frame_retries += len(pending)
                self.metrics.frame_retries.inc(len(pending))
                if self._stop.wait(self._retry.delay_s(attempt_round - 1)):
                    raise _Abandoned()
            started = time.monotonic()
            calls = [pending] if attempt_round == 1 else [[index] for index in pending]
            failed: dict[int, str] = {}
            served = False
            for call in calls:
                try:
                    outcomes = self._call_inspect([frames[index] for index in call])
                except InspectionUnavailable as error:
                    failed.update((index, f"unavailable: {shorten(str(error), _DETAIL_CHARS)}") for index in call)
                    if attempt_round > 1 and not served and self._probe_says_down():
                        raise  # the service says it is down: stall now instead of trying every frame alone
                    continue
                for index, outcome in zip(call, outcomes):
                    if isinstance(outcome, Retryable):
                        failed[index] = f"retryable: {shorten(outcome.detail, _DETAIL_CHARS)}"
                    else:
                        final[index] = outcome
                        served = True
                        canary = index
            if failed:
                blamed = served or self._last_served_at > started or (attempt_round > 1 and self._canary_served(frames, canary))
                if not blamed and attempt_round > 1:
                    raise InspectionUnavailable(f"no frame could be inspected; e.g. {next(iter(failed.values()))}")
                for index, detail in failed.items():
                    failures[index] += int(blamed)
                    final[index] = _Exhausted(detail)
            pending = [
                index for index in pending
                if isinstance(final[index], _Exhausted) and failures[index] < self._settings.frame_max_attempts
            ]  # fmt: skip
        return [outcome if outcome is not None else _Exhausted("no outcome") for outcome in final]

    def _call_inspect(self, frames: list[DecodedFrame]) -> list[Scored | Rejected | Retryable]:
        """One call of the inspect callable; anything but InspectionUnavailable that goes wrong is Retryable."""
        try:
            outcomes = list(self._inspect(frames))
        except InspectionUnavailable:
            raise
        except Exception as error:  # a crashed replica, a bug, an OOM: not the frames' fault until proven
            logger.warning(
                "inspect callable failed", extra={"frames": len(frames), "error": f"{type(error).__name__}: {error}"}
            )
            return [Retryable(f"{type(error).__name__}: {shorten(str(error), _DETAIL_CHARS)}")] * len(frames)
        if len(outcomes) != len(frames):
            return [Retryable(f"inspect returned {len(outcomes)} outcomes for {len(frames)} frames")] * len(frames)
        checked: list[Scored | Rejected | Retryable] = [
            outcome if isinstance(outcome, (Scored, Rejected, Retryable))
            else Retryable(f"inspect returned a {type(outcome).__name__}, not an outcome")
            for outcome in outcomes
        ]  # fmt: skip
        if any(not isinstance(outcome, Retryable) for outcome in checked):
            self._last_served_at = time.monotonic()
        return checked

    def _canary_served(self, frames: list[DecodedFrame], canary: int | None) -> bool:
        if canary is None:
            return False
        try:
            return not isinstance(self._call_inspect([frames[canary]])[0], Retryable)
        except InspectionUnavailable:
            return False

    def _probe_says_down(self) -> bool:
        return self._probe is not None and not self._probe_says_alive()

    def _probe_says_alive(self) -> bool:
        if self._probe is None:
            return False
        try:
            return bool(self._probe())
        except Exception:  # a failing probe vouches for nothing
            return False

    def _store_result(
        self, pair: tuple[ConsumerRecord, DecodedFrame], outcome: Scored | Rejected | _Exhausted, polled_at: float
    ) -> InspectionResult | DeadLetter:
        record, frame = pair
        if isinstance(outcome, Rejected):
            return self._letters.build(record, outcome.reason, outcome.detail)
        if isinstance(outcome, _Exhausted):
            detail = f"failed {self._settings.frame_max_attempts} inspection attempts, the last: {outcome.detail}"
            return self._letters.build(record, DeadLetterReason.RETRIES_EXHAUSTED, detail)
        request = frame.request
        digest = hashlib.sha256(frame.encoded or b"").hexdigest()
        keys = result_keys(request.domain, request.line, request.timestamp, request.frame_id)
        try:
            with self._claimed(keys.result):
                existing = self._existing_digest(keys.result)
                if existing is not None and existing != digest:
                    detail = (f"frame id {request.frame_id!r} already has a result at {keys.result} for another image "
                              f"(sha256 {existing[:16]}..., this one {digest[:16]}...)")  # fmt: skip
                    return self._letters.build(record, DeadLetterReason.DUPLICATE_FRAME, detail)
                with self.clock.stage("encode"):
                    encoded = encode_result(
                        request, frame.image, outcome, self._settings.results_bucket, self._settings.overlay_jpeg_quality,
                        input_digest=digest, original=frame.encoded if self._settings.store_inputs else None,
                    )  # fmt: skip
                with self.clock.stage("store"):
                    return store_result(encoded, self._store, polled_at)
        except InvalidOutcomeError as error:
            return self._letters.build(record, DeadLetterReason.INFERENCE_ERROR, f"invalid outcome: {error}")
        except _INFRASTRUCTURE:
            raise
        except Exception as error:  # the last line of defence for one frame's objects
            logger.exception("writing a frame's result failed", extra={"frame_id": request.frame_id})
            detail = f"writing the result failed: {type(error).__name__}: {shorten(str(error), _DETAIL_CHARS)}"
            return self._letters.build(record, DeadLetterReason.INTERNAL_ERROR, detail)

    def _existing_digest(self, result_key: str) -> str | None:
        """input_digest of the result already stored at the key (None: no result, or one written before digests)."""
        stored = self._store.find_bytes(self._settings.results_bucket, result_key)
        if stored is None:
            return None
        try:
            return InspectionResult.from_bytes(stored).input_digest
        except ValidationError:
            return None  # an unreadable earlier result is replaced

    def _claimed(self, key: str) -> _KeyClaim:
        return _KeyClaim(self, key)

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
        except (CommitFailedError, KafkaError) as error:
            # Published but not committed: the partition's next owner (or this consumer after a rewind) replays
            # these frames, overwriting the same keys; the events may then appear twice (at-least-once).
            logger.warning("offset commit failed", extra={"error": str(error), "error_type": type(error).__name__})
            return
        self.stats.commits += 1
        self.metrics.committed.inc(len(records))


class _KeyClaim:
    """Holds one result key for the current thread: two frames with one id never write their objects at once."""

    def __init__(self, consumer: FrameConsumer, key: str) -> None:
        self._consumer = consumer
        self._key = key

    def __enter__(self) -> None:
        consumer = self._consumer
        with consumer._keys_free:
            while self._key in consumer._keys_in_use:
                consumer._keys_free.wait()
            consumer._keys_in_use.add(self._key)

    def __exit__(self, *exc_info: object) -> None:
        consumer = self._consumer
        with consumer._keys_free:
            consumer._keys_in_use.discard(self._key)
            consumer._keys_free.notify_all()
