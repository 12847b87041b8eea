"""The whole streaming system on one machine (local stack, local Ray, the Serve app), for the demo and bench."""
from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from kafka.admin import KafkaAdminClient, NewTopic
from ray import serve

from services.consumer.frame_consumer import FrameConsumer, limit_torch_threads
from services.protocol.messages import InspectionResult
from services.ray_cluster import start_ray
from services.storage.object_store import ObjectStore
from services.producer.frame_producer import FrameProducer
from services.registry.domain_registry import DomainRegistry
from services.consumer.serve_client import InspectionClient
from services.serving.app import build_app
from services.serving.deployment_config import deployment_config_from_args
from services.serving.settings import ServingSettings
from services.settings import ServiceSettings
from inctrl.dev.local_stack import LocalStack
from inctrl.dev.topic_reader import read_topic

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StreamFrame:
    """A frame to send: where it comes from and its encoded image."""

    domain: str
    line: str
    frame_id: str
    image: bytes


@dataclass(frozen=True)
class StreamRun:
    """Results of a streamed set and the consumer's wall time for it (group join and warm-up excluded)."""

    results: list[InspectionResult]
    seconds: float
    stage_cpu_s: dict[str, float]
    """CPU seconds of the timed run by stage: the consumer's stages (services/consumer/stage_clock.py),
    then "ingress" and "replica" (their processes, all threads), "broker" and "s3 server"."""

    @property
    def frames_per_s(self) -> float:
        return len(self.results) / self.seconds if self.seconds > 0 else 0.0


class LocalInspectionService:
    """Start with `with LocalInspectionService(...) as service:`; Ray is started first so training can share it."""

    def __init__(self, work_dir: Path, num_cpus: int | None = None) -> None:
        self.work_dir = Path(work_dir).resolve()
        self._num_cpus = num_cpus
        self._stack = LocalStack(self.work_dir / "stack")
        self._own_ray = False
        self._app_name = f"inctrl-{uuid.uuid4().hex[:6]}"
        self.http_url: str | None = None

    def __enter__(self) -> LocalInspectionService:
        endpoints = self._stack.start()
        # Serve replicas read S3 settings from the environment they inherit from this process.
        os.environ.update(endpoints.environment())
        suffix = uuid.uuid4().hex[:8]
        self.settings = ServiceSettings(
            frames_topics=[f"frames-{suffix}"], results_topic=f"results-{suffix}",
            dead_letter_topic=f"dead-letters-{suffix}", consumer_group=f"inspectors-{suffix}",
        )  # fmt: skip
        self.store = ObjectStore.from_settings(self.settings)
        self.registry = DomainRegistry(self.store, self.settings.registry_prefix, max_references=ServingSettings().max_references)
        admin = KafkaAdminClient(**self.settings.kafka_client_options())
        try:
            partitions = {self.settings.frames_topics[0]: 3, self.settings.results_topic: 1, self.settings.dead_letter_topic: 1}
            admin.create_topics([NewTopic(topic, count, 1) for topic, count in partitions.items()])
        finally:
            admin.close()
        if not ray.is_initialized():
            ray_dir = Path("/tmp") / f"inctrl-ray-{suffix}"  # short: Ray's socket paths are length-limited
            start_ray(temp_dir=ray_dir, num_cpus=self._num_cpus)
            self._own_ray = True
        return self

    def serve(self, args: dict[str, Any]) -> str:
        """Deploy the Serve app with these args; returns its HTTP base URL."""
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app(deployment_config_from_args(args)), name=self._app_name, route_prefix="/")
        self.http_url = f"http://127.0.0.1:{port}"
        return self.http_url

    def stream(self, frames: list[StreamFrame], warmup: list[StreamFrame]) -> StreamRun:
        """Send warm-up frames, consume them (group join, bank loads), then time the consumption of `frames`."""
        limit_torch_threads()  # as `inctrl consume` does; the in-process detector has run by now
        with FrameConsumer.connect(self.settings, inspect=InspectionClient(self._app_name)) as consumer:
            self._produce(warmup)
            consumer.run(max_frames=len(warmup), idle_timeout_s=60)
            self._produce(frames)
            before = {**consumer.clock.snapshot(), **self._service_cpu_s(), **self._stack.cpu_seconds()}
            started = time.monotonic()
            consumer.run(max_frames=len(warmup) + len(frames), idle_timeout_s=60)
            seconds = time.monotonic() - started
            after = {**consumer.clock.snapshot(), **self._service_cpu_s(), **self._stack.cpu_seconds()}
        wanted = {frame.frame_id for frame in frames}
        events = [InspectionResult.from_bytes(value) for value in read_topic(self.settings.kafka_client_options(), self.settings.results_topic, len(warmup) + len(frames))]
        latest = {event.frame_id: event for event in events if event.frame_id in wanted}
        return StreamRun(list(latest.values()), seconds, {stage: after[stage] - before[stage] for stage in after})

    def _service_cpu_s(self) -> dict[str, float]:
        """CPU seconds so far of the ingress and of the replicas (as the ingress counts them)."""
        return serve.get_app_handle(self._app_name).cpu_seconds.remote().result()

    def _produce(self, frames: list[StreamFrame]) -> None:
        with FrameProducer(self.settings, self.store) as producer:
            for frame in frames:
                producer.send_image(frame.image, frame.domain, frame.line, frame.frame_id)

    def __exit__(self, *exc_info: object) -> None:
        if self._own_ray:
            # Our own local Ray: stopping it stops Serve with it. serve.shutdown() first would kill the
            # controller under its own pending calls, which the raylet then reports to this terminal.
            ray.shutdown()
        elif self.http_url is not None:
            serve.delete(self._app_name)
        self._stack.stop()
