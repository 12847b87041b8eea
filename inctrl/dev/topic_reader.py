"""Read a topic from the beginning until an expected number of messages arrived (demo, bench, tests)."""
from __future__ import annotations

import time
from typing import Any, Callable

from kafka import KafkaConsumer, TopicPartition


def read_topic(
    client_options: dict[str, Any],
    topic: str,
    expected: int,
    timeout_s: float = 30.0,
    until: Callable[[list[bytes]], bool] | None = None,
) -> list[bytes]:
    """Message values from every partition, stopping at ``expected`` messages (or, when given, once
    ``until(values)`` holds: at-least-once topics may hold duplicates, so a count can stop too early) or the
    timeout.

    Counts what it reads instead of trusting the broker's end offsets, which Tansu reports wrongly after
    batched produces.
    """
    consumer = KafkaConsumer(**client_options, enable_auto_commit=False)
    try:
        partitions = consumer.partitions_for_topic(topic) or {0}
        consumer.assign([TopicPartition(topic, p) for p in sorted(partitions)])
        consumer.seek_to_beginning()
        values: list[bytes] = []
        deadline = time.monotonic() + timeout_s
        done = until or (lambda read: len(read) >= expected)
        while not done(values) and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=200).values():
                values.extend(record.value for record in batch)
        return values
    finally:
        consumer.close()
