"""Dead letters that always fit on the broker and never lose their original; replaying originals.

A DeadLetter carries its original record inline while the original is at most
settings.dead_letter_payload_max_bytes and its key short. Otherwise the original (key and value, as a
StoredOriginal) is written to s3://{dead-letter bucket}/dead-letters/{topic}/{partition}/{offset}.json
(deterministic: a replayed record overwrites its earlier copy), the letter carries the payload's first
bytes and that URI. Details and keys are cut, so a letter's size is bounded by
    4/3 * dead_letter_payload_max_bytes + DETAIL_MAX_CHARS + KEY_MAX_CHARS + a few hundred bytes,
which settings keep below max_message_bytes.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from pydantic import ValidationError
from pydantic_core import from_json

from services.protocol.messages import DeadLetter, DeadLetterReason, StoredOriginal
from services.storage.object_store import ObjectStore
from services.storage.uri import S3Uri
from services.settings import ServiceSettings

logger = logging.getLogger(__name__)

DETAIL_MAX_CHARS = 2000
KEY_MAX_CHARS = 512
DEAD_LETTER_PREFIX = "dead-letters/"
_FRAME_ID_HINT_CHARS = 256
_SEND_TIMEOUT_S = 30.0


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def frame_id_hint(payload: bytes) -> str | None:
    """The frame_id of a payload that is a JSON object with a short string frame_id, else None.

    Parsed by pydantic-core, whose recursion limit turns pathological nesting into an error, not a crash.
    """
    try:
        document = from_json(payload)
    except ValueError:
        return None
    frame_id = document.get("frame_id") if isinstance(document, dict) else None
    return frame_id if isinstance(frame_id, str) and len(frame_id) <= _FRAME_ID_HINT_CHARS else None


class DeadLetterBuilder:
    """Builds bounded DeadLetters for records, storing originals that do not fit (thread-safe)."""

    def __init__(self, settings: ServiceSettings, store: ObjectStore) -> None:
        self._settings = settings
        self._store = store
        self._bucket = settings.dead_letter_store_bucket()
        self._bucket_ready = False

    def build(self, record: ConsumerRecord, reason: DeadLetterReason, detail: str) -> DeadLetter:
        """The dead letter of one record; raises ObjectStoreUnavailable when its original cannot be stored."""
        payload = record.value or b""
        raw_key = record.key or b""
        key_text = raw_key.decode(errors="replace") if raw_key else None
        cap = self._settings.dead_letter_payload_max_bytes
        fits = len(payload) <= cap and len(key_text or "") <= KEY_MAX_CHARS
        payload_uri = None if fits else self._store_original(record)
        logger.warning(
            "frame dead-lettered",
            extra={"reason": reason.value, "detail": _cut(detail, 300), "topic": record.topic,
                   "partition": record.partition, "offset": record.offset, "payload_uri": payload_uri},
        )  # fmt: skip
        return DeadLetter(
            reason=reason,
            detail=_cut(detail, DETAIL_MAX_CHARS),
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=_cut(key_text, KEY_MAX_CHARS) if key_text is not None else None,
            payload=payload if fits else payload[:cap],
            payload_size=len(payload),
            payload_truncated=not fits,
            payload_uri=payload_uri,
            frame_id=frame_id_hint(payload),
        )

    def _store_original(self, record: ConsumerRecord) -> str:
        if not self._bucket_ready:
            self._store.ensure_bucket(self._bucket)
            self._bucket_ready = True
        key = f"{DEAD_LETTER_PREFIX}{record.topic}/{record.partition}/{record.offset}.json"
        original = StoredOriginal(
            topic=record.topic, partition=record.partition, offset=record.offset, key=record.key, value=record.value or b""
        )
        self._store.put_bytes(self._bucket, key, original.to_bytes(), content_type="application/json")
        return f"s3://{self._bucket}/{key}"


def original_of(letter: DeadLetter, store: ObjectStore) -> tuple[bytes | None, bytes]:
    """The (key, value) of the record a dead letter stands for, read back from the store when it was kept there."""
    if not letter.payload_truncated:
        return (letter.key.encode() if letter.key is not None else None), letter.payload
    stored = S3Uri.parse(letter.payload_uri or "")
    bucket, key = stored.bucket, stored.key
    original = StoredOriginal.from_bytes(store.get_bytes(bucket, key))
    return original.key, original.value


@dataclass
class ReplaySummary:
    """What a replay read and re-published."""

    read: int = 0
    unreadable: int = 0
    matched: Counter[str] = field(default_factory=Counter)
    published: int = 0

    def render(self) -> str:
        """One line for the command line."""
        by_reason = ", ".join(f"{reason} {count}" for reason, count in sorted(self.matched.items())) or "none"
        return (f"read {self.read} dead letters ({self.unreadable} unreadable), matched {sum(self.matched.values())} "
                f"({by_reason}), re-published {self.published}")  # fmt: skip


def replay_dead_letters(
    settings: ServiceSettings,
    store: ObjectStore,
    reasons: Collection[DeadLetterReason] = (),
    since: datetime | None = None,
    dry_run: bool = False,
    topic: str | None = None,
    idle_s: float = 3.0,
) -> ReplaySummary:
    """Re-publish the originals of dead letters (optionally only some reasons, failed at or after `since`).

    Reads the whole dead-letter topic from the beginning until no record came for idle_s (the broker's
    end offsets are not trusted: Tansu reports them wrongly after batched produces). Each original goes
    back, with its original key, to its original topic (or `topic`).
    """
    summary = ReplaySummary()
    letters = _read_dead_letters(settings, idle_s, summary)
    chosen = [
        letter for letter in letters
        if (not reasons or letter.reason in reasons) and (since is None or letter.failed_at >= since)
    ]  # fmt: skip
    summary.matched.update(letter.reason.value for letter in chosen)
    if dry_run or not chosen:
        return summary
    producer = KafkaProducer(
        **settings.kafka_client_options(), client_id="inctrl-dead-letter-replay", acks="all",
        max_request_size=max(settings.max_message_bytes, 1_048_576) * 2,
    )  # fmt: skip
    try:
        futures = []
        for letter in chosen:
            key, value = original_of(letter, store)
            futures.append(producer.send(topic or letter.topic, key=key, value=value))
        producer.flush(timeout=_SEND_TIMEOUT_S)
        for future in futures:
            future.get(timeout=_SEND_TIMEOUT_S)
            summary.published += 1
    finally:
        producer.close()
    logger.info("dead letters replayed", extra={"published": summary.published, "matched": dict(summary.matched)})
    return summary


def _read_dead_letters(settings: ServiceSettings, idle_s: float, summary: ReplaySummary) -> list[DeadLetter]:
    consumer = KafkaConsumer(**settings.kafka_client_options(), enable_auto_commit=False)
    letters = []
    try:
        partitions = consumer.partitions_for_topic(settings.dead_letter_topic) or {0}
        consumer.assign([TopicPartition(settings.dead_letter_topic, p) for p in sorted(partitions)])
        consumer.seek_to_beginning()
        last_record = time.monotonic()
        while time.monotonic() - last_record < idle_s:
            for batch in consumer.poll(timeout_ms=200).values():
                last_record = time.monotonic()
                for record in batch:
                    summary.read += 1
                    try:
                        letters.append(DeadLetter.from_bytes(record.value))
                    except ValidationError:
                        summary.unreadable += 1
    finally:
        consumer.close()
    return letters
