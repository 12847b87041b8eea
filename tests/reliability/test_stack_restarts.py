"""The local stack's restart helpers: a broker on Tansu's s3:// storage engine keeps its log and the group's
committed offsets across a restart (also after SIGKILL); the S3 server keeps its objects."""
from __future__ import annotations

from collections.abc import Callable

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata

from inctrl.dev import topic_reader
from services.storage.object_store import ObjectStore
from inctrl.dev.local_stack import LocalStack

from .conftest import create_topics, store_for

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("crash", [False, True], ids=["sigterm", "sigkill"])
def test_broker_on_s3_storage_keeps_log_and_offsets_across_restart(
    crash: bool, persistent_stack: LocalStack, unique_name: Callable[[str], str]
) -> None:
    bootstrap = persistent_stack.endpoints.kafka_bootstrap
    topic, group = unique_name("restart"), unique_name("group")
    create_topics(bootstrap, {topic: 2})
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for i in range(40):
        producer.send(topic, f"m{i}".encode(), partition=i % 2)
    producer.flush()
    producer.close()
    committer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    committer.commit({TopicPartition(topic, 0): OffsetAndMetadata(7, "", -1)})
    committer.close()

    persistent_stack.restart_kafka(down_s=0.5, crash=crash)

    assert persistent_stack.status()["kafka"]
    values = topic_reader.read_topic({"bootstrap_servers": bootstrap}, topic, 40, timeout_s=30)
    assert sorted(values) == sorted(f"m{i}".encode() for i in range(40))
    reader = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        assert reader.committed(TopicPartition(topic, 0)) == 7
    finally:
        reader.close()


def test_s3_restart_keeps_objects_and_port(local_stack: LocalStack, unique_name: Callable[[str], str]) -> None:
    endpoints = local_stack.endpoints
    store: ObjectStore = store_for(endpoints)
    bucket = unique_name("bucket")
    store.ensure_bucket(bucket)
    store.put_bytes(bucket, "a/b.bin", b"payload")

    local_stack.restart_s3(down_s=0.5)

    assert local_stack.endpoints.s3_endpoint == endpoints.s3_endpoint
    assert store.get_bytes(bucket, "a/b.bin") == b"payload"

