"""The frame consumer's two Kafka clients, built from settings: frames in, results and dead letters out."""
from __future__ import annotations

from dataclasses import dataclass

from kafka import KafkaConsumer, KafkaProducer

from services.settings import ServiceSettings

# Tansu does not cap message sizes: fetch what the consumer may refuse as oversize.
_MIN_FETCH_BYTES = 52_428_800
_MIN_PARTITION_FETCH_BYTES = 1_048_576


@dataclass(frozen=True)
class KafkaClients:
    """A consumer in the frames group (not yet subscribed: the FrameConsumer subscribes it with its
    rebalance listener) and an idempotent-enough producer (acks=all) for results and dead letters."""

    consumer: KafkaConsumer
    producer: KafkaProducer

    @classmethod
    def connect(cls, settings: ServiceSettings, client_id: str, max_poll_records: int) -> KafkaClients:
        """Both clients, or neither: a producer built before a failing consumer is closed again."""
        connection = settings.kafka_client_options()
        producer = KafkaProducer(
            **connection, client_id=client_id, acks="all", linger_ms=5, max_request_size=settings.max_message_bytes
        )
        try:
            consumer = KafkaConsumer(
                **connection,
                group_id=settings.consumer_group,
                client_id=client_id,
                enable_auto_commit=False,
                auto_offset_reset=settings.auto_offset_reset,
                session_timeout_ms=settings.session_timeout_ms,
                heartbeat_interval_ms=settings.heartbeat_interval_ms,
                max_poll_records=max_poll_records,
                fetch_max_bytes=max(_MIN_FETCH_BYTES, 2 * settings.max_message_bytes),
                max_partition_fetch_bytes=max(_MIN_PARTITION_FETCH_BYTES, 2 * settings.max_message_bytes),
            )
        except BaseException:
            producer.close(timeout=0)
            raise
        return cls(consumer, producer)
