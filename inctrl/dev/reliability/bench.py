"""`inctrl bench reliability`: every fault scenario against a fresh local system, table to benchmarks/reliability.md.

The system: a local stack (Tansu in memory + SeaweedFS) on ports of its own, a second stack whose broker
keeps its log in its S3 server (Tansu's s3:// storage engine, for the broker restart), local Ray with the
Serve app over a tiny random-weight checkpoint, and the product's consumer, `inctrl consume`, as real
processes inspecting over HTTP. The poison-frame scenario runs FrameConsumer threads, because its fault
lives in the inspect callable (NeverAnswers around the HTTP client). Every scenario gets fresh topics, a
fresh group and a fresh results bucket; the consumers use the production defaults except for small
micro-batches (so a fault lands mid-stream).
"""
from __future__ import annotations

import logging
import platform
import shlex
import sys
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from pydantic import BaseModel, ConfigDict, Field

from inctrl.dev.reliability.consumers import ConsumerCommand, ConsumerGroup, ConsumerProcesses, ConsumerThreads
from inctrl.dev.reliability.ledger import synthetic_frames
from inctrl.dev.reliability.scenarios import (
    BrokerRestart,
    ConsumerKill,
    Fault,
    NeverAnswers,
    PoisonFrame,
    Rebalance,
    ReplicaKill,
    S3Outage,
    ScenarioReport,
    run_scenario,
)
from services.storage.object_store import ObjectStore
from services.settings import ServiceSettings
from inctrl.dev.local_stack import LocalStack

logger = logging.getLogger(__name__)

DOMAINS = ("alpha", "beta")
SCENARIOS = ("consumer-sigkill", "rebalance", "broker-restart", "s3-outage", "replica-kill", "poison-frame")
_BATCH = 4


class ReliabilityOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    frames: int = Field(200, ge=10)
    s3_down_s: float = Field(60.0, gt=0)
    broker_down_s: float = Field(3.0, ge=0)
    work_dir: Path = Path(".bench/reliability")
    scenarios: tuple[str, ...] = SCENARIOS


def _fresh_settings(base: ServiceSettings, stack: LocalStack, name: str) -> ServiceSettings:
    endpoints = stack.endpoints
    suffix = f"{name}-{uuid.uuid4().hex[:6]}"
    settings = base.model_copy(
        update={
            "kafka_bootstrap": endpoints.kafka_bootstrap, "s3_endpoint": endpoints.s3_endpoint,
            "s3_access_key": endpoints.s3_access_key, "s3_secret_key": endpoints.s3_secret_key,
            "frames_topics": [f"frames-{suffix}"], "results_topic": f"results-{suffix}",
            "dead_letter_topic": f"dead-letters-{suffix}", "consumer_group": f"inspectors-{suffix}",
            "results_bucket": f"results-{suffix}", "max_poll_records": _BATCH, "max_in_flight": _BATCH,
            "poll_timeout_ms": 200,
        }
    )  # fmt: skip
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(**settings.kafka_client_options())
    try:
        topics = {settings.frames_topics[0]: 3, settings.results_topic: 1, settings.dead_letter_topic: 1}
        admin.create_topics([NewTopic(topic, count, 1) for topic, count in topics.items()])
    finally:
        admin.close()
    ObjectStore.from_settings(settings).ensure_bucket(settings.results_bucket)
    return settings


def run_reliability_bench(options: ReliabilityOptions, setup: list[str]) -> list[ScenarioReport]:
    """Start the system, run the chosen scenarios one after another, return their reports.

    Appends a line on the consumers' settings to `setup` for the report."""
    from ray import serve

    from services.consumer.http_client import HttpInspectionClient
    from services.serving.backbone_choice import choose_detector
    from inctrl.dev.local_service import LocalInspectionService

    work = options.work_dir.resolve()
    # Started here first on ports of its own (an outage must not let another stack take them);
    # LocalInspectionService finds it running under the same root and reuses it.
    stack = LocalStack(work / "stack", default_ports=False)
    stack.start()
    persistent = LocalStack(work / "persistent-stack", kafka_storage="s3", default_ports=False)
    reports = []
    try:
        with persistent, LocalInspectionService(work) as service:
            detector, _ = choose_detector("tiny")
            checkpoint = detector.save(work / "checkpoint")
            rng = np.random.default_rng(0)
            for domain in DOMAINS:
                references = [rng.uniform(0.35, 0.6, (3, 48, 48)).astype(np.float32) for _ in range(2)]
                service.registry.register(domain, domain, references, detector, threshold=0.5)
            url = service.serve(
                {
                    "checkpoint_uri": str(checkpoint), "backbone": "tiny", "nn_backend": "faiss",
                    "registry_prefix": service.registry.uri,
                    "batch": {"max_batch_size": 8, "batch_wait_timeout_s": 0.02},
                    "pool": {"num_replicas": 1, "max_ongoing_requests": 64},
                }
            )  # fmt: skip
            app_name = next(iter(serve.status().applications))
            base = service.settings
            setup.append(
                f"Consumer settings: micro-batches of {_BATCH}, {_BATCH} frames in flight ({4 * _BATCH} for "
                f"replica-kill), S3 retry deadline {base.s3_retry_deadline_s:g} s, frame_max_attempts "
                f"{base.frame_max_attempts}, session timeout {base.session_timeout_ms} ms."
            )

            def processes(settings: ServiceSettings, name: str) -> ConsumerGroup:
                return ConsumerProcesses(ConsumerCommand.inctrl_consume(url), settings, work / "logs" / name)

            plans: dict[str, Callable[[], tuple[Fault, ServiceSettings, LocalStack, ConsumerGroup, set[str]]]] = {}

            def plan(name: str, fault: Fault, on: LocalStack = stack, in_flight: int = _BATCH) -> None:
                def build() -> tuple[Fault, ServiceSettings, LocalStack, ConsumerGroup, set[str]]:
                    settings = _fresh_settings(base, on, name).model_copy(update={"max_in_flight": in_flight})
                    return fault, settings, on, processes(settings, name), set()

                plans[name] = build

            plan("consumer-sigkill", ConsumerKill())
            plan("rebalance", Rebalance())
            plan("broker-restart", BrokerRestart(options.broker_down_s), on=persistent)
            plan("s3-outage", S3Outage(options.s3_down_s))
            # Several micro-batches in flight keep the replica busy, so the kill lands inside a batch.
            plan("replica-kill", ReplicaKill(app_name), in_flight=4 * _BATCH)

            def poison() -> tuple[Fault, ServiceSettings, LocalStack, ConsumerGroup, set[str]]:
                settings = _fresh_settings(base, stack, "poison-frame")
                frame_id = f"poison-frame-{options.frames // 3:04d}"
                never_answers = NeverAnswers(HttpInspectionClient(url, token=settings.serve_token), frame_id)
                group = ConsumerThreads(
                    settings, never_answers, ObjectStore.from_settings(settings),
                    "FrameConsumer threads, HTTP to Serve; one frame never answers",
                )  # fmt: skip
                return PoisonFrame(never_answers), settings, stack, group, {frame_id}

            plans["poison-frame"] = poison
            for name in options.scenarios:
                fault, settings, on, group, expect_dead = plans[name]()
                frames = synthetic_frames(name, options.frames, DOMAINS)
                typer.echo(f"scenario {name}: {fault.describe()} ...", err=True)
                report = run_scenario(
                    name, fault, group, on, settings, ObjectStore.from_settings(settings), frames, expect_dead
                )
                typer.echo(f"scenario {name}: {'passed' if report.passed else 'FAILED: ' + '; '.join(report.failures())}", err=True)
                reports.append(report)
    finally:
        stack.stop()  # LocalInspectionService stops it too, unless it failed to start
    return reports


def render_markdown(reports: list[ScenarioReport], options: ReliabilityOptions, command: str, setup: str = "") -> str:
    """benchmarks/reliability.md: the command, the setup, one row per scenario, then why any failed."""
    lines = [
        "# Reliability: faults mid-stream, every frame accounted for",
        "",
        "Command:",
        "",
        f"    {command}",
        "",
        f"Run {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on {platform.node() or 'this machine'} "
        f"({platform.machine()}, Python {platform.python_version()}); {options.frames} frames per scenario, "
        "tiny random-weight backbone on local Ray Serve, Tansu + SeaweedFS local stack. Counts come from the "
        "topics read from the beginning and from the result.json objects listed in S3, never from the "
        "consumers' own statistics. Pass: frames in = distinct results out (topic and S3), 0 lost, 0 "
        "wrongly dead-lettered, no consumer exit it did not ask for, the fault hit mid-stream. Duplicates "
        "(at-least-once replays) are counted, not failed.",
        *([setup] if setup else []),
        "",
        "| scenario | fault | frames in | result events | distinct results | result.json | lost | duplicates "
        "| dead letters by reason | wrongly dead-lettered | consumer exits | handled at fault | s | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in reports:
        t = r.tally
        letters = ", ".join(f"{reason}: {count}" for reason, count in sorted(t.dead_letters.items())) or "0"
        verdict = "pass" if r.passed else "**FAIL**"
        at_fault = "from the start" if r.handled_at_fault is None else str(r.handled_at_fault)
        lines.append(
            f"| {r.scenario} | {r.fault} | {t.frames_in} | {t.result_events} | {t.distinct_results} | "
            f"{t.stored_results} | {t.lost} | {t.duplicates} | {letters} | {t.wrongly_dead_lettered} | "
            f"{len(r.consumer_exits)} | {at_fault} | {r.seconds:.0f} | {verdict} |"
        )
    lines += ["", "Consumers: " + "; ".join(sorted({f"{r.scenario}: {r.consumer}" for r in reports})) + "."]
    details = [r for r in reports if not r.passed or r.notes]
    if details:
        lines += ["", "## Details", ""]
    for r in details:
        lines.append(f"- **{r.scenario}**: " + "; ".join([*r.failures(), *r.notes]))
        lines += [f"  - {exit_}" for exit_ in r.consumer_exits[:5]]
        if len(r.consumer_exits) > 5:
            lines.append(f"  - ... {len(r.consumer_exits) - 5} more exits")
    return "\n".join(lines) + "\n"


def bench_reliability_command(
    frames: Annotated[int, typer.Option(min=10, help="Frames per scenario.")] = 200,
    s3_down_s: Annotated[float, typer.Option(help="How long the S3 server stays down.")] = 60.0,
    broker_down_s: Annotated[float, typer.Option(help="How long the broker stays down.")] = 3.0,
    scenario: Annotated[list[str], typer.Option(help=f"Run only these ({', '.join(SCENARIOS)}).")] = list(SCENARIOS),
    work_dir: Annotated[Path, typer.Option(help="Folder for the stacks, checkpoint, Ray and consumer logs.")] = Path(".bench/reliability"),
    out: Annotated[Path, typer.Option(help="Markdown table written here.")] = Path("benchmarks/reliability.md"),
) -> None:
    """Faults mid-stream (consumer SIGKILL, rebalance, broker restart, S3 outage, replica kill, poison frame): lost, duplicates, dead letters."""
    unknown = sorted(set(scenario) - set(SCENARIOS))
    if unknown:
        raise typer.BadParameter(f"unknown scenarios {unknown}; choose from {', '.join(SCENARIOS)}")
    options = ReliabilityOptions(
        frames=frames, s3_down_s=s3_down_s, broker_down_s=broker_down_s, work_dir=work_dir, scenarios=tuple(scenario)
    )
    setup: list[str] = []
    reports = run_reliability_bench(options, setup)
    command = shlex.join(["inctrl", *sys.argv[1:]])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_markdown(reports, options, command, " ".join(setup)))
    for report in reports:
        typer.echo(f"{report.scenario:<18} {'pass' if report.passed else 'FAIL'}  lost {report.tally.lost}  "
                   f"duplicates {report.tally.duplicates}  dead letters {report.tally.dead_letters}  "
                   f"exits {len(report.consumer_exits)}")  # fmt: skip
    typer.echo(f"table written to {out}")
    if not all(report.passed for report in reports):
        raise typer.Exit(code=1)
