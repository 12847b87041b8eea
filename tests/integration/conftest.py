"""Fixtures for integration tests: one real local stack (Tansu + SeaweedFS) per session, fresh names per test.

Use them from any test under tests/integration/:
    def test_x(service_settings, object_store, read_topic): ...
service_settings points at the stack with unique topics, group and buckets, so tests never see each
other's messages.
"""

from __future__ import annotations

import importlib.util
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest
from kafka.admin import KafkaAdminClient, NewTopic

from services.storage.object_store import ObjectStore
from services.settings import ServiceSettings
from inctrl.dev.local_stack import LocalStack, StackEndpoints
from inctrl.dev import topic_reader

FRAME_PARTITIONS = 3


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """A started LocalStack under a session temp dir; default ports when free, other free ports otherwise."""
    with LocalStack(tmp_path_factory.mktemp("stack")) as stack:
        yield stack


@pytest.fixture(scope="session")
def stack_endpoints(local_stack: LocalStack) -> StackEndpoints:
    """Broker address, S3 endpoint and S3 keys of the session stack."""
    return local_stack.endpoints


@pytest.fixture(scope="session")
def kafka_bootstrap(stack_endpoints: StackEndpoints) -> str:
    """host:port of the running broker."""
    return stack_endpoints.kafka_bootstrap


@pytest.fixture
def unique_name() -> Callable[[str], str]:
    """Makes names no other test uses: unique_name("frames") -> "frames-1a2b3c4d5e"."""
    return lambda prefix: f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def topic_name(unique_name: Callable[[str], str], kafka_bootstrap: str) -> str:
    """A fresh topic, created with FRAME_PARTITIONS partitions."""
    name = unique_name("topic")
    create_topics(kafka_bootstrap, {name: FRAME_PARTITIONS})
    return name


@pytest.fixture
def bucket_name(unique_name: Callable[[str], str], stack_endpoints: StackEndpoints) -> str:
    """A fresh, existing bucket."""
    name = unique_name("bucket")
    store_for(stack_endpoints).ensure_bucket(name)
    return name


@pytest.fixture
def service_settings(unique_name: Callable[[str], str], stack_endpoints: StackEndpoints) -> ServiceSettings:
    """ServiceSettings for the session stack with fresh topics (created), group and buckets."""
    settings = ServiceSettings(
        kafka_bootstrap=stack_endpoints.kafka_bootstrap,
        frames_topics=[unique_name("frames")],
        results_topic=unique_name("results"),
        dead_letter_topic=unique_name("dead-letters"),
        consumer_group=unique_name("group"),
        s3_endpoint=stack_endpoints.s3_endpoint,
        s3_access_key=stack_endpoints.s3_access_key,
        s3_secret_key=stack_endpoints.s3_secret_key,
        results_bucket=unique_name("results"),
        frames_bucket=unique_name("frames"),
        poll_timeout_ms=200,
        s3_retry_deadline_s=30.0,
    )
    create_topics(
        settings.kafka_bootstrap,
        {settings.frames_topics[0]: FRAME_PARTITIONS, settings.results_topic: 1, settings.dead_letter_topic: 1},
    )
    return settings


@pytest.fixture
def object_store(service_settings: ServiceSettings) -> ObjectStore:
    """ObjectStore on the session stack, with the settings' results bucket created."""
    store = ObjectStore.from_settings(service_settings)
    store.ensure_bucket(service_settings.results_bucket)
    return store


@pytest.fixture
def read_topic(kafka_bootstrap: str) -> Callable[..., list[bytes]]:
    """read_topic(topic, expected, timeout_s=30, until=None) -> message values, read from the beginning of every
    partition.

    Stops once `expected` messages arrived, or `until(values)` holds when given (or the timeout passed); see
    inctrl.dev.topic_reader.
    """

    def read(
        topic: str, expected: int, timeout_s: float = 30.0, until: Callable[[list[bytes]], bool] | None = None
    ) -> list[bytes]:
        return topic_reader.read_topic({"bootstrap_servers": kafka_bootstrap}, topic, expected, timeout_s, until)

    return read


@pytest.fixture(scope="session")
def statistics_inspector() -> ModuleType:
    """The statistics_inspector module (a deterministic stand-in for the detector)."""
    path = Path(__file__).with_name("statistics_inspector.py")
    spec = importlib.util.spec_from_file_location("statistics_inspector", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def create_topics(bootstrap: str, partitions_by_topic: dict[str, int]) -> None:
    """Create topics (replication 1) on the local broker."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(name, count, 1) for name, count in partitions_by_topic.items()])
    finally:
        admin.close()


def store_for(endpoints: StackEndpoints) -> ObjectStore:
    """An ObjectStore on the given stack."""
    return ObjectStore(
        endpoints.s3_endpoint,
        endpoints.s3_access_key.get_secret_value(),
        endpoints.s3_secret_key.get_secret_value(),
    )
