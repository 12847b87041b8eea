"""Indexer: the results and dead-letter topics into the inspection index, at least once.

Each poll is written in ONE database transaction, and its offsets are committed to Kafka only after that
transaction has committed. A crash in between replays the batch; the upserts are idempotent
(services/index/repository.py), so the replay changes nothing. Failure handling:

    unparseable event (bad JSON, schema violation)  counted (inctrl_index_bad_events), logged, skipped
    an event the database refuses (DataError/IntegrityError, e.g. a field longer than its column)
        the batch is rolled back and rewritten one event per transaction; the refused one is skipped
    the database unreachable (OperationalError, ...)  rolled back, not committed, rewound, retried with back-off

Nothing an event contains stops the process. The drift watch (services/index/drift.py) and the consumer-lag
gauges are updated between polls, every drift_interval_s.
"""
from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from kafka import ConsumerRebalanceListener, KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata
from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, SQLAlchemyError, StatementError

from services.index.drift import DriftAlert, DriftWatch
from services.index.metrics import IndexMetrics
from services.index.repository import EventPosition, InspectionIndex
from services.index.settings import IndexSettings
from services.protocol.messages import DeadLetter, InspectionResult
from services.settings import ServiceSettings

logger = logging.getLogger(__name__)

EventKind = Literal["result", "dead_letter"]
_SEND_TIMEOUT_S = 30.0
_RETRY_BACKOFF_S = 0.5
_RETRY_BACKOFF_MAX_S = 30.0


@dataclass
class IndexerStats:
    """Counts of one indexer run."""

    polled: int = 0
    written: int = 0
    unchanged: int = 0
    bad: int = 0
    batches: int = 0
    retries: int = 0
    alerts: int = 0
    bad_by_reason: dict[str, int] = field(default_factory=dict)

    def log_fields(self) -> dict[str, object]:
        return {"polled": self.polled, "written": self.written, "unchanged": self.unchanged, "bad": self.bad,
                "batches": self.batches, "retries": self.retries, "alerts": self.alerts}  # fmt: skip


class _Membership(ConsumerRebalanceListener):
    def __init__(self) -> None:
        self.joined = threading.Event()

    def on_partitions_revoked(self, revoked: object) -> None:
        self.joined.clear()

    def on_partitions_assigned(self, assigned: object) -> None:
        self.joined.set()


class _Refused(Exception):
    """One event the database refused (its content's fault, not the database's)."""


def _refused_by_database(error: StatementError) -> bool:
    """The event's fault: a value the column or a constraint refuses, or one that cannot be bound at all.

    Any other driver error (connection lost, server shutting down, missing table) is the database's
    trouble: the batch is retried, never skipped.
    """
    if isinstance(error, DBAPIError):
        return isinstance(error, (DataError, IntegrityError))
    return True


class Indexer:
    """Consumes InspectionResult and DeadLetter events into an InspectionIndex."""

    def __init__(
        self,
        service_settings: ServiceSettings,
        settings: IndexSettings,
        index: InspectionIndex,
        drift_watch_factory: Callable[[Callable[[DriftAlert], None], IndexMetrics], DriftWatch] | None = None,
        metrics: IndexMetrics | None = None,
        client_id: str = "inctrl-indexer",
    ) -> None:
        self._service = service_settings
        self._settings = settings
        self._index = index
        self.metrics = metrics or IndexMetrics()
        self._kinds: dict[str, EventKind] = {
            service_settings.results_topic: "result",
            service_settings.dead_letter_topic: "dead_letter",
        }
        connection = service_settings.kafka_client_options()
        self._connection = connection
        self._consumer = KafkaConsumer(
            **connection,
            group_id=settings.consumer_group,
            client_id=client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=service_settings.session_timeout_ms,
            heartbeat_interval_ms=service_settings.heartbeat_interval_ms,
            max_poll_records=settings.max_poll_records,
        )
        self._membership = _Membership()
        self._consumer.subscribe(list(self._kinds), listener=self._membership)
        self._producer: KafkaProducer | None = None
        self._admin: KafkaAdminClient | None = None
        self._drift = drift_watch_factory(self._publish_alert, self.metrics) if drift_watch_factory else None
        self._next_drift_at = 0.0
        self._stop = threading.Event()
        self._closed = False
        self._last_poll_at = time.monotonic()
        self.stats = IndexerStats()

    # -- health -----------------------------------------------------------------------------------------
    def seconds_since_poll(self) -> float:
        """Time since the loop last returned from a poll."""
        return time.monotonic() - self._last_poll_at

    def joined_group(self) -> bool:
        """Whether the indexer holds a group assignment."""
        return self._membership.joined.is_set() and not self._closed

    def database_reachable(self) -> bool:
        """Whether the index database answers a trivial query."""
        try:
            with self._index.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            return True
        except SQLAlchemyError:
            return False

    # -- lifecycle --------------------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the loop to finish after the batch in hand."""
        self._stop.set()

    def close(self) -> None:
        """Leave the group and release connections (uncommitted events are redelivered)."""
        if self._closed:
            return
        self._closed = True
        if self._producer is not None:
            self._producer.flush()
            self._producer.close()
        if self._admin is not None:
            self._admin.close()
        self._consumer.close(autocommit=False)
        logger.info("indexer closed", extra=self.stats.log_fields())

    def __enter__(self) -> Indexer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def run_forever(self) -> IndexerStats:
        """Index until stop() or SIGTERM/SIGINT, then close."""
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda signum, frame: self.stop())
        try:
            return self.run()
        finally:
            self.close()

    def run(self, max_events: int | None = None, idle_timeout_s: float | None = None) -> IndexerStats:
        """Index until stop(), until max_events events were handled, or after idle_timeout_s without events
        (counted from the group join)."""
        idle_since = time.monotonic()
        backoff = _RETRY_BACKOFF_S
        while not self._stop.is_set():
            if max_events is not None and self.stats.polled >= max_events:
                break
            room = self._settings.max_poll_records if max_events is None else max_events - self.stats.polled
            polled = self._consumer.poll(timeout_ms=self._settings.poll_timeout_ms, max_records=room)
            self._last_poll_at = time.monotonic()
            records = [record for batch in polled.values() for record in batch]
            if records:
                idle_since = time.monotonic()
                if self.process_batch(records):
                    backoff = _RETRY_BACKOFF_S
                else:
                    self._stop.wait(backoff)
                    backoff = min(2 * backoff, _RETRY_BACKOFF_MAX_S)
            elif not self._membership.joined.is_set():
                idle_since = time.monotonic()  # idle counts from the group join, not from the start
            elif idle_timeout_s is not None and time.monotonic() - idle_since >= idle_timeout_s:
                break
            self._maybe_watch_drift()
        logger.info("indexer loop ended", extra=self.stats.log_fields())
        return self.stats

    # -- one batch --------------------------------------------------------------------------------------
    def process_batch(self, records: Sequence[ConsumerRecord]) -> bool:
        """Write the records in one transaction, then commit their offsets; False when rewound for a retry."""
        self.stats.polled += len(records)
        parsed = []
        for record in records:
            kind = self._kinds.get(record.topic)
            if kind is None:  # not subscribed to it; cannot happen unless the subscription changed
                continue
            self.metrics.events.labels(kind).inc()
            event = self._parse(record, kind)
            if event is not None:
                parsed.append((record, kind, event))
        started = time.monotonic()
        try:
            try:
                outcomes = self._write_all(parsed)
            except _Refused:
                outcomes = self._write_one_by_one(parsed)
        except SQLAlchemyError as error:
            self._rewind(records, error)
            return False
        self.metrics.transaction_seconds.observe(time.monotonic() - started)
        for kind, (changed, total) in outcomes.items():
            self.metrics.written.labels(kind).inc(changed)
            self.metrics.unchanged.labels(kind).inc(total - changed)
            self.stats.written += changed
            self.stats.unchanged += total - changed
        self._commit(records)
        self.stats.batches += 1
        return True

    def _parse(self, record: ConsumerRecord, kind: EventKind) -> InspectionResult | DeadLetter | None:
        model = InspectionResult if kind == "result" else DeadLetter
        try:
            return model.from_bytes(record.value or b"")
        except ValidationError as error:
            first = error.errors()[0] if error.errors() else {"type": "invalid"}
            self._bad(record, kind, "schema_violation" if first["type"] != "json_invalid" else "invalid_json", str(first.get("msg", "")))
        except (ValueError, UnicodeDecodeError) as error:
            self._bad(record, kind, "invalid_json", str(error))
        return None

    def _bad(self, record: ConsumerRecord, kind: EventKind, reason: str, detail: str) -> None:
        self.stats.bad += 1
        self.stats.bad_by_reason[reason] = self.stats.bad_by_reason.get(reason, 0) + 1
        self.metrics.bad_events.labels(kind, reason).inc()
        logger.warning(
            "unreadable event skipped",
            extra={"kind": kind, "reason": reason, "detail": detail[:500], "topic": record.topic,
                   "partition": record.partition, "offset": record.offset},
        )  # fmt: skip

    def _write_all(self, parsed: list[tuple[ConsumerRecord, EventKind, object]]) -> dict[EventKind, tuple[int, int]]:
        """Every event in one transaction, one statement execution per kind: {kind: (rows changed, events)}."""
        results = [(event, EventPosition(record.partition, record.offset)) for record, kind, event in parsed if kind == "result"]
        dead = [event for _, kind, event in parsed if kind == "dead_letter"]
        try:
            with self._index.session() as session, session.begin():
                return {
                    "result": (self._index.upsert_results(results, session=session), len(results)),  # type: ignore[arg-type]
                    "dead_letter": (self._index.upsert_dead_letters(dead, session=session), len(dead)),  # type: ignore[arg-type]
                }
        except StatementError as error:
            if _refused_by_database(error):
                raise _Refused(str(error)) from error
            raise

    def _write_one_by_one(self, parsed: list[tuple[ConsumerRecord, EventKind, object]]) -> dict[EventKind, tuple[int, int]]:
        """One transaction per event, so the one the database refuses is skipped alone."""
        outcomes: dict[EventKind, tuple[int, int]] = {"result": (0, 0), "dead_letter": (0, 0)}
        for record, kind, event in parsed:
            try:
                with self._index.session() as session, session.begin():
                    if kind == "result":
                        changed = self._index.upsert_result(event, EventPosition(record.partition, record.offset), session=session)  # type: ignore[arg-type]
                    else:
                        changed = self._index.upsert_dead_letter(event, session=session)  # type: ignore[arg-type]
            except StatementError as error:
                if not _refused_by_database(error):
                    raise
                self._bad(record, kind, "refused_by_database", str(error.orig or error))
                continue
            written, total = outcomes[kind]
            outcomes[kind] = (written + changed, total + 1)
        return outcomes

    def _rewind(self, records: Sequence[ConsumerRecord], error: Exception) -> None:
        first: dict[TopicPartition, int] = {}
        for record in records:
            partition = TopicPartition(record.topic, record.partition)
            first[partition] = min(first.get(partition, record.offset), record.offset)
        owned = self._consumer.assignment()
        for partition, offset in first.items():
            if partition in owned:
                self._consumer.seek(partition, offset)
        self.stats.polled -= len(records)
        self.stats.retries += 1
        self.metrics.database_retries.inc()
        logger.warning(
            "index database unavailable, batch will be retried",
            extra={"error": str(error)[:500], "batch_size": len(records)},
        )

    def _commit(self, records: Sequence[ConsumerRecord]) -> None:
        next_offsets: dict[TopicPartition, int] = {}
        for record in records:
            partition = TopicPartition(record.topic, record.partition)
            next_offsets[partition] = max(next_offsets.get(partition, 0), record.offset + 1)
        try:
            self._consumer.commit({tp: OffsetAndMetadata(offset, "", -1) for tp, offset in next_offsets.items()})
        except CommitFailedError as error:
            # Rebalanced meanwhile: the new owner replays these events, which changes nothing.
            logger.warning("offset commit failed after rebalance", extra={"error": str(error)})

    # -- drift and alerts -------------------------------------------------------------------------------
    def _maybe_watch_drift(self) -> None:
        if time.monotonic() < self._next_drift_at:
            return
        self._next_drift_at = time.monotonic() + self._settings.drift_interval_s
        self.observe_lag()
        self.watch_drift()

    def observe_lag(self) -> None:
        """Set inctrl_kafka_consumer_lag for the frame consumers' group and this indexer's group.

        Lag = end offset - committed offset, summed over a topic's partitions. (The local Tansu broker's
        end-offset report is wrong after batched produces: trust these figures on real Kafka only.)
        """
        groups = {
            self._service.consumer_group: self._service.frames_topics,
            self._settings.consumer_group: list(self._kinds),
        }
        try:
            if self._admin is None:
                self._admin = KafkaAdminClient(**self._connection, client_id="inctrl-indexer-lag")
            for group, topics in groups.items():
                committed = self._admin.list_group_offsets(group).get(group, {})
                for topic in topics:
                    partitions = [TopicPartition(topic, p) for p in sorted(self._consumer.partitions_for_topic(topic) or ())]
                    if not partitions:
                        continue
                    ends = self._consumer.end_offsets(partitions)
                    lag = sum(max(0, ends[tp] - (committed[tp].offset if tp in committed else 0)) for tp in partitions)
                    self.metrics.consumer_lag.labels(group, topic).set(lag)
        except (KafkaError, OSError) as error:
            logger.warning("consumer lag not observed", extra={"error": str(error)[:500]})

    def watch_drift(self) -> None:
        """One drift evaluation; registry, database or broker trouble is logged and retried next interval."""
        if self._drift is None:
            return
        try:
            self._drift.evaluate()
        except (SQLAlchemyError, KafkaError, OSError, RuntimeError) as error:
            logger.warning("drift evaluation failed, retried next interval", extra={"error": str(error)[:500]})

    def _publish_alert(self, alert: DriftAlert) -> None:
        if self._producer is None:
            self._producer = KafkaProducer(**self._connection, client_id="inctrl-indexer-alerts", acks="all")
        future = self._producer.send(
            self._settings.alerts_topic, key=f"{alert.domain}/{alert.line}".encode(), value=alert.to_bytes()
        )
        self._producer.flush(timeout=_SEND_TIMEOUT_S)
        future.get(timeout=_SEND_TIMEOUT_S)
        self.stats.alerts += 1
