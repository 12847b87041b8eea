"""At-least-once across a killed consumer process, and graceful shutdown on SIGTERM."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from PIL import Image

from services.consumer.frame_consumer import FrameConsumer
from services.protocol.messages import InspectionResult
from services.storage.object_store import ObjectStore
from services.producer.frame_producer import FrameProducer
from services.settings import ServiceSettings

pytestmark = pytest.mark.integration

PROJECT_ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("statistics_inspector.py")


def produce_frames(settings: ServiceSettings, count: int) -> set[str]:
    rng = np.random.default_rng(7)
    with FrameProducer(settings) as producer:
        for i in range(count):
            buffer = io.BytesIO()
            Image.fromarray(rng.integers(100, 140, (32, 32, 3), dtype=np.uint8)).save(buffer, format="PNG")
            producer.send_image(buffer.getvalue(), "washer", f"line-{i % 3}", f"frame-{i:03d}")
    return {f"frame-{i:03d}" for i in range(count)}


def stored_frames(store: ObjectStore, settings: ServiceSettings) -> set[str]:
    keys = store.list_keys(settings.results_bucket, "results/")
    return {key.split("/")[-2] for key in keys if key.endswith("/result.json")}


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.1)


def start_worker(settings: ServiceSettings, delay_s: float) -> subprocess.Popen[bytes]:
    environment = {**os.environ, **settings.to_environment(), "INSPECT_DELAY_S": str(delay_s)}
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), environment.get("PYTHONPATH")]))
    return subprocess.Popen(
        [sys.executable, str(WORKER)], env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )


def test_killed_consumer_loses_no_frame(
    service_settings: ServiceSettings,
    object_store: ObjectStore,
    statistics_inspector: ModuleType,
    read_topic: Callable[..., list[bytes]],
) -> None:
    settings = service_settings.model_copy(update={"max_poll_records": 2})
    frames = produce_frames(settings, 24)
    worker = start_worker(settings, delay_s=0.3)
    try:
        wait_for(lambda: len(stored_frames(object_store, settings)) >= 4, 60, "the first results of the worker")
    finally:
        worker.kill()  # SIGKILL: no drain, no commit, no leave-group
        worker.wait(timeout=10)
    done_before_kill = stored_frames(object_store, settings)
    assert len(done_before_kill) < len(frames), "the worker must die mid-stream for this test to mean anything"

    replacement = FrameConsumer.connect(settings, statistics_inspector.inspect_by_statistics, object_store)
    runner = threading.Thread(target=replacement.run, kwargs={"idle_timeout_s": 60})
    runner.start()
    try:
        wait_for(lambda: stored_frames(object_store, settings) == frames, 60, "every frame's result after restart")
    finally:
        replacement.stop()
        runner.join(timeout=30)
        replacement.close()
    assert not runner.is_alive()
    def every_frame(values: list[bytes]) -> bool:  # replays add duplicates, so a count of 24 can stop short
        return {InspectionResult.from_bytes(value).frame_id for value in values} >= frames

    events = [InspectionResult.from_bytes(value) for value in read_topic(settings.results_topic, len(frames), until=every_frame)]
    # At-least-once: every frame has an event; replays may add duplicates but never a different result.
    assert {event.frame_id for event in events} == frames
    for event in events:
        assert object_store.get_json(settings.results_bucket, event.result_key)["score"] == event.score


def test_sigterm_drains_commits_and_exits_cleanly(
    service_settings: ServiceSettings, object_store: ObjectStore, statistics_inspector: ModuleType
) -> None:
    frames = produce_frames(service_settings, 6)
    worker = start_worker(service_settings, delay_s=0.0)
    try:
        wait_for(lambda: stored_frames(object_store, service_settings) == frames, 60, "all results of the worker")
        worker.send_signal(signal.SIGTERM)
        output, _ = worker.communicate(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == 0, output.decode(errors="replace")[-2000:]
    assert b"frame consumer closed" in output
    with FrameConsumer.connect(service_settings, statistics_inspector.inspect_by_statistics, object_store) as again:
        assert again.run(idle_timeout_s=3).polled == 0
