"""What went into a stream and what came out of it, counted from the topics and the object store.

Counts come from reading both topics from the beginning and listing result.json objects, never from the
broker's end offsets (Tansu reports them wrongly after batched produces) nor from the consumers' own stats
(a killed consumer reports nothing). Messages are read as plain JSON, so the count does not depend on
schema details the consumer may change.
"""
from __future__ import annotations

import io
import json
import logging
import threading
import zlib
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np
from kafka import KafkaConsumer, TopicPartition
from PIL import Image
from pydantic import BaseModel, ConfigDict

from services.storage.object_store import ObjectStore
from services.producer.frame_producer import FrameProducer
from services.settings import ServiceSettings
from inctrl.dev.topic_reader import read_topic

logger = logging.getLogger(__name__)

FrameKey = tuple[str, str, str]
"""(domain, line, frame_id): how results are keyed on the topic and in the object store."""

# Reading a finished topic of a few hundred small messages from the beginning takes well under this.
_FINAL_READ_S = 3.0
_EVERYTHING = 10**9


@dataclass(frozen=True)
class StreamFrame:
    """One frame to send. inctrl.dev.local_service has the same shape, but importing it starts torch
    and Ray, which a consumer-only scenario must not wait for."""

    domain: str
    line: str
    frame_id: str
    image: bytes


def frame_key(frame: StreamFrame) -> FrameKey:
    return (frame.domain, frame.line, frame.frame_id)


def synthetic_frames(prefix: str, count: int, domains: Sequence[str], lines: int = 3, size: int = 48) -> list[StreamFrame]:
    """`count` small PNG frames spread over domains and lines; frame ids `{prefix}-0000`... (deterministic)."""
    rng = np.random.default_rng(zlib.crc32(prefix.encode()))
    frames = []
    for i in range(count):
        pixels = rng.integers(90, 150, (size, size, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        frames.append(StreamFrame(domains[i % len(domains)], f"line-{i % lines}", f"{prefix}-{i:04d}", buffer.getvalue()))
    return frames


def produce(settings: ServiceSettings, frames: Sequence[StreamFrame]) -> None:
    """Send every frame inline to the frames topic and wait until the broker acknowledged each."""
    with FrameProducer(settings) as producer:
        for frame in frames:
            producer.send_image(frame.image, frame.domain, frame.line, frame.frame_id)


class Tally(BaseModel):
    """The account of one stream: what was sent against what came out."""

    model_config = ConfigDict(frozen=True)

    frames_in: int
    result_events: int
    distinct_results: int
    stored_results: int
    lost: int
    duplicates: int
    dead_letters: dict[str, int]
    wrongly_dead_lettered: int
    expected_dead_lettered: int
    expected_dead: int
    missing_from_store: int

    @property
    def exact(self) -> bool:
        """Frames in = distinct results out (topic and store), nothing lost, nothing wrongly dead-lettered."""
        owed = self.frames_in - self.expected_dead
        return (
            self.lost == 0
            and self.wrongly_dead_lettered == 0
            and self.distinct_results == owed
            and self.stored_results == owed
            and self.expected_dead_lettered == self.expected_dead
        )


def _json_messages(settings: ServiceSettings, topic: str, read_s: float) -> list[dict]:
    values = read_topic(settings.kafka_client_options(), topic, _EVERYTHING, read_s)
    documents = []
    for value in values:
        try:
            document = json.loads(value)
        except ValueError:
            logger.warning("unreadable message on %s", topic)
            continue
        if isinstance(document, dict):
            documents.append(document)
    return documents


def _result_key(document: dict) -> FrameKey:
    return (str(document.get("domain")), str(document.get("line")), str(document.get("frame_id")))


class ProgressWatch:
    """Follows the results and dead-letter topics live: which frame ids have been handled so far.

    Progress only (when to inject a fault, when the stream is done); the final account is count_outcomes,
    read afresh from the beginning. A broker that is down or restarting is waited out and re-read.
    """

    def __init__(self, settings: ServiceSettings) -> None:
        self._settings = settings
        self._seen: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="progress-watch", daemon=True)

    def __enter__(self) -> ProgressWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def handled(self) -> set[str]:
        with self._lock:
            return set(self._seen)

    def _follow(self) -> None:
        topics = (self._settings.results_topic, self._settings.dead_letter_topic)
        while not self._stop.is_set():
            try:
                consumer = KafkaConsumer(**self._settings.kafka_client_options(), enable_auto_commit=False)
            except Exception as error:  # broker down: try again shortly
                logger.info("progress watch cannot connect: %s", error)
                self._stop.wait(1.0)
                continue
            try:
                consumer.assign([TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or {0})])
                consumer.seek_to_beginning()
                while not self._stop.is_set():
                    for batch in consumer.poll(timeout_ms=200).values():
                        ids = {_frame_id(record.value) for record in batch}
                        with self._lock:
                            self._seen |= ids - {None}
            except Exception as error:  # the broker went away mid-read: re-read from the beginning
                logger.info("progress watch lost the broker: %s", error)
                self._stop.wait(1.0)
            finally:
                consumer.close()


def _frame_id(value: bytes | None) -> str | None:
    try:
        document = json.loads(value or b"")
    except ValueError:
        return None
    frame_id = document.get("frame_id") if isinstance(document, dict) else None
    return frame_id if isinstance(frame_id, str) else None


def stored_result_keys(store: ObjectStore, bucket: str) -> list[FrameKey]:
    """(domain, line, frame_id) of every results/{domain}/{line}/{date}/{frame_id}/result.json object."""
    keys = []
    for key in store.list_keys(bucket, "results/"):
        parts = key.split("/")
        if len(parts) == 6 and parts[-1] == "result.json":
            keys.append((parts[1], parts[2], parts[4]))
    return keys


def count_outcomes(
    settings: ServiceSettings,
    store: ObjectStore,
    frames: Sequence[StreamFrame],
    expect_dead: Collection[str] = (),
) -> Tally:
    """Read both topics and the results bucket and account for every frame sent.

    expect_dead: frame ids that must end as dead letters (a poison frame); every other dead letter of a
    frame that was sent is a wrong one, even when a replay later gave the frame a result.
    """
    sent = {frame_key(frame) for frame in frames}
    owed = {key for key in sent if key[2] not in expect_dead}
    events = Counter(_result_key(d) for d in _json_messages(settings, settings.results_topic, _FINAL_READ_S))
    letters = _json_messages(settings, settings.dead_letter_topic, _FINAL_READ_S)
    stored = set(stored_result_keys(store, settings.results_bucket)) & sent
    sent_ids = {key[2] for key in sent}
    dead_ids = {str(d.get("frame_id")) for d in letters if d.get("frame_id") in sent_ids}
    answered = set(events) & sent
    wrong = {key for key in owed if key[2] in dead_ids}
    return Tally(
        frames_in=len(sent),
        result_events=sum(count for key, count in events.items() if key in sent),
        distinct_results=len(answered & owed),
        stored_results=len(stored & owed),
        lost=len({key for key in owed if key not in answered and key[2] not in dead_ids}),
        duplicates=sum(count - 1 for key, count in events.items() if key in sent),
        dead_letters=dict(Counter(str(d.get("reason")) for d in letters)),
        wrongly_dead_lettered=len(wrong),
        expected_dead_lettered=len(set(expect_dead) & dead_ids),
        expected_dead=len(set(expect_dead) & sent_ids),
        missing_from_store=len(answered - stored),
    )
