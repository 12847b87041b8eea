"""Faults mid-stream against the real broker and S3 server: frames in = distinct results out, nothing lost.

Consumers are real processes (FrameConsumer with the deterministic statistics stand-in: these faults are
about Kafka and S3, not Serve) under a supervisor that restarts and counts any that exit on their own.
The default suite runs a short stream through a consumer SIGKILL; the S3 outages (5 s at 60 frames, 60 s at
200) and the other full faults (200 frames, rebalance, broker restart, a poison frame) are behind the slow marker.
"""
from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

from inctrl.dev.reliability.consumers import ConsumerCommand, ConsumerProcesses, ConsumerThreads
from inctrl.dev.reliability.ledger import synthetic_frames
from inctrl.dev.reliability.scenarios import (
    BrokerRestart,
    ConsumerKill,
    NeverAnswers,
    PoisonFrame,
    Rebalance,
    S3Outage,
    ScenarioReport,
    run_scenario,
)
from services.storage.object_store import ObjectStore
from services.settings import ServiceSettings
from inctrl.dev.local_stack import LocalStack

from .conftest import STAND_IN_DOMAINS

pytestmark = pytest.mark.integration

FAST_FRAMES = 60
FULL_FRAMES = 200


def check(report: ScenarioReport) -> None:
    print(report.model_dump_json(indent=2))
    assert report.passed, f"{report.scenario}: {'; '.join(report.failures())}"


@pytest.mark.parametrize("count", [FAST_FRAMES, pytest.param(FULL_FRAMES, marks=pytest.mark.slow)])
def test_consumer_sigkill_mid_stream_loses_nothing(
    count: int, stream_settings: ServiceSettings, local_stack: LocalStack, object_store: ObjectStore,
    stand_in_consumer: ConsumerCommand, log_dir: Path,
) -> None:  # fmt: skip
    group = ConsumerProcesses(stand_in_consumer, stream_settings, log_dir)
    frames = synthetic_frames("kill", count, STAND_IN_DOMAINS)
    check(run_scenario("consumer SIGKILL", ConsumerKill(), group, local_stack, stream_settings, object_store, frames))


# Opt-in at both sizes (about 40 s even at 60 frames): the default suite covers an S3 outage under a real
# consumer in tests/integration/test_consumer_hardening.py and tests/integration/test_object_store_s3.py.
@pytest.mark.slow
@pytest.mark.parametrize(("count", "down_s"), [(FAST_FRAMES, 5.0), (FULL_FRAMES, 60.0)])
def test_s3_outage_mid_stream_loses_nothing(
    count: int, down_s: float, stream_settings: ServiceSettings, local_stack: LocalStack, object_store: ObjectStore,
    stand_in_consumer: ConsumerCommand, log_dir: Path,
) -> None:  # fmt: skip
    group = ConsumerProcesses(stand_in_consumer, stream_settings, log_dir)
    frames = synthetic_frames("s3-down", count, STAND_IN_DOMAINS)
    report = run_scenario("S3 down", S3Outage(down_s), group, local_stack, stream_settings, object_store, frames)
    check(report)


@pytest.mark.slow
def test_rebalance_mid_stream_loses_nothing(
    stream_settings: ServiceSettings, local_stack: LocalStack, object_store: ObjectStore,
    stand_in_consumer: ConsumerCommand, log_dir: Path,
) -> None:  # fmt: skip
    group = ConsumerProcesses(stand_in_consumer, stream_settings, log_dir)
    frames = synthetic_frames("rebalance", FULL_FRAMES, STAND_IN_DOMAINS)
    check(run_scenario("rebalance", Rebalance(), group, local_stack, stream_settings, object_store, frames))


@pytest.mark.slow
def test_broker_restart_mid_stream_loses_nothing(
    persistent_settings: ServiceSettings, persistent_stack: LocalStack, stand_in_consumer: ConsumerCommand,
    log_dir: Path,
) -> None:  # fmt: skip
    store = ObjectStore.from_settings(persistent_settings)
    group = ConsumerProcesses(stand_in_consumer, persistent_settings, log_dir)
    frames = synthetic_frames("broker", FULL_FRAMES, STAND_IN_DOMAINS)
    check(run_scenario("broker restart", BrokerRestart(), group, persistent_stack, persistent_settings, store, frames))


@pytest.mark.slow
def test_frame_that_always_times_out_is_dead_lettered_alone(
    stream_settings: ServiceSettings, local_stack: LocalStack, object_store: ObjectStore,
    statistics_inspector: ModuleType,
) -> None:  # fmt: skip
    frames = synthetic_frames("poison", FULL_FRAMES, STAND_IN_DOMAINS)
    poison = frames[len(frames) // 3].frame_id
    never_answers = NeverAnswers(statistics_inspector.inspect_by_statistics, poison)
    group = ConsumerThreads(stream_settings, never_answers, object_store, "FrameConsumer thread, statistics stand-in")
    report = run_scenario(
        "frame that always times out", PoisonFrame(never_answers), group, local_stack, stream_settings,
        object_store, frames, expect_dead={poison},
    )  # fmt: skip
    check(report)
    assert never_answers.attempts > 1, "the poison frame must be retried before it is dead-lettered"
