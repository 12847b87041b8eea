"""Fixtures of the fault-injection suite: the shared stack fixtures of tests/integration (loaded by path:
conftest files only apply to their own folder) on a stack of this suite's own, a second stack whose broker keeps its log in the S3 server
(so it survives a broker restart), and the consumer commands.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from inctrl.dev.reliability.consumers import ConsumerCommand
from services.storage.object_store import ObjectStore
from services.settings import ServiceSettings
from inctrl.dev.local_stack import LocalStack

_spec = importlib.util.spec_from_file_location(
    "reliability_stack_fixtures", Path(__file__).parents[1] / "integration" / "conftest.py"
)
assert _spec is not None and _spec.loader is not None
_stack_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_stack_fixtures)
stack_endpoints = _stack_fixtures.stack_endpoints
kafka_bootstrap = _stack_fixtures.kafka_bootstrap
unique_name = _stack_fixtures.unique_name
service_settings = _stack_fixtures.service_settings
object_store = _stack_fixtures.object_store
statistics_inspector = _stack_fixtures.statistics_inspector
create_topics = _stack_fixtures.create_topics
store_for = _stack_fixtures.store_for

PROJECT_ROOT = Path(__file__).resolve().parents[2]
STAND_IN_WORKER = PROJECT_ROOT / "tests" / "integration" / "statistics_inspector.py"
STAND_IN_DOMAINS = ("washer", "fabric")
# Small batches, one in flight at a time, and a delay per batch stretch the stream so that a fault lands in its middle.
STREAM_BATCH = 4
STAND_IN_DELAY_S = 0.3


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """The shared fixtures' stack, but this suite's own, on ports no other stack prefers: other test runs on
    this machine start stacks on the default ports, and would take ours while a fault has a server down."""
    with LocalStack(tmp_path_factory.mktemp("fault-stack"), default_ports=False) as stack:
        yield stack


@pytest.fixture
def stream_settings(service_settings: ServiceSettings) -> ServiceSettings:
    """The shared stack's fresh topics, group and buckets, with micro-batches small enough to fault between."""
    return service_settings.model_copy(update={"max_poll_records": STREAM_BATCH, "max_in_flight": STREAM_BATCH})


@pytest.fixture(scope="session")
def persistent_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """A second LocalStack whose broker keeps its log in its S3 server (Tansu's s3:// storage engine)."""
    with LocalStack(tmp_path_factory.mktemp("persistent-stack"), kafka_storage="s3", default_ports=False) as stack:
        yield stack


@pytest.fixture
def persistent_settings(stream_settings: ServiceSettings, persistent_stack: LocalStack) -> ServiceSettings:
    """stream_settings pointed at the persistent stack, its topics and results bucket created there."""
    endpoints = persistent_stack.endpoints
    settings = stream_settings.model_copy(
        update={
            "kafka_bootstrap": endpoints.kafka_bootstrap,
            "s3_endpoint": endpoints.s3_endpoint,
            "s3_access_key": endpoints.s3_access_key,
            "s3_secret_key": endpoints.s3_secret_key,
        }
    )
    create_topics(
        settings.kafka_bootstrap,
        {settings.frames_topics[0]: _stack_fixtures.FRAME_PARTITIONS, settings.results_topic: 1, settings.dead_letter_topic: 1},
    )
    ObjectStore.from_settings(settings).ensure_bucket(settings.results_bucket)
    return settings


@pytest.fixture
def stand_in_consumer() -> ConsumerCommand:
    """A real consumer process (FrameConsumer) scoring with the deterministic statistics stand-in."""
    path = os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))
    return ConsumerCommand(
        "FrameConsumer process, statistics stand-in",
        (sys.executable, str(STAND_IN_WORKER)),
        {"PYTHONPATH": path, "INSPECT_DELAY_S": str(STAND_IN_DELAY_S)},
    )


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    """Where consumer processes write their output (read it when a scenario fails)."""
    return tmp_path / "consumers"

