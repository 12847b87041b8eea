"""Faults that need the real Serve app (tiny backbone): the product's own consumer, `inctrl consume`, as a
real process inspecting over HTTP, SIGKILLed mid-stream; a Serve replica killed mid-batch (ray.kill, the
Serve controller starts a new one). Opt-in (slow): Ray, Serve and torch-importing consumer processes."""
from __future__ import annotations

from pathlib import Path

import pytest

from inctrl.dev.reliability.consumers import ConsumerCommand, ConsumerProcesses, ConsumerThreads
from inctrl.dev.reliability.ledger import synthetic_frames
from inctrl.dev.reliability.scenarios import (
    ConsumerKill,
    NeverAnswers,
    PoisonFrame,
    ReplicaKill,
    ScenarioReport,
    run_scenario,
)
from services.consumer.http_client import HttpInspectionClient
from services.storage.object_store import ObjectStore
from services.settings import ServiceSettings
from inctrl.dev.local_stack import LocalStack

from .conftest import SERVED_DOMAINS, ServedApp

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FRAMES = 200


def check(report: ScenarioReport) -> None:
    print(report.model_dump_json(indent=2))
    assert report.passed, f"{report.scenario}: {'; '.join(report.failures())}"


def test_inctrl_consume_sigkill_mid_stream_loses_nothing(
    served_app: ServedApp, stream_settings: ServiceSettings, local_stack: LocalStack, object_store: ObjectStore,
    log_dir: Path,
) -> None:  # fmt: skip
    group = ConsumerProcesses(ConsumerCommand.inctrl_consume(served_app.http_url), stream_settings, log_dir)
    frames = synthetic_frames("serve-kill", FRAMES, SERVED_DOMAINS)
    check(run_scenario("consumer SIGKILL", ConsumerKill(), group, local_stack, stream_settings, object_store, frames))


def test_serve_replica_killed_mid_batch_loses_nothing(
    served_app: ServedApp, stream_settings: ServiceSettings, local_stack: LocalStack, object_store: ObjectStore,
    log_dir: Path,
) -> None:  # fmt: skip
    # Several micro-batches in flight keep the replica busy, so the kill lands inside a batch.
    settings = stream_settings.model_copy(update={"max_in_flight": 4 * stream_settings.max_poll_records})
    group = ConsumerProcesses(ConsumerCommand.inctrl_consume(served_app.http_url), settings, log_dir)
    frames = synthetic_frames("replica", FRAMES, SERVED_DOMAINS)
    fault = ReplicaKill(served_app.app_name)
    check(run_scenario("Serve replica killed", fault, group, local_stack, settings, object_store, frames))


def test_frame_that_always_times_out_over_http_is_dead_lettered_alone(
    served_app: ServedApp, stream_settings: ServiceSettings, local_stack: LocalStack, object_store: ObjectStore,
) -> None:  # fmt: skip
    frames = synthetic_frames("http-poison", FRAMES, SERVED_DOMAINS)
    poison = frames[len(frames) // 3].frame_id
    client = HttpInspectionClient(served_app.http_url, token=stream_settings.serve_token)
    never_answers = NeverAnswers(client, poison)
    group = ConsumerThreads(stream_settings, never_answers, object_store, "FrameConsumer thread, HTTP to Serve")
    report = run_scenario(
        "frame that always times out (HTTP)", PoisonFrame(never_answers), group, local_stack, stream_settings,
        object_store, frames, expect_dead={poison},
    )  # fmt: skip
    check(report)
