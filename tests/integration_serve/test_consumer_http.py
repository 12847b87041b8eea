"""The consumer as the Helm chart runs it: outside Ray, inspecting over the Serve app's HTTP port, with its
health and metrics server; on the real local broker, S3 server and Ray."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import requests

from services.consumer.health import ConsumerHealthServer
from services.consumer.http_client import HttpInspectionClient
from services.consumer.frame_consumer import FrameConsumer
from services.protocol.outcomes import DecodedFrame
from services.protocol.messages import DeadLetter, InspectionRequest, InspectionResult
from services.producer.frame_producer import FrameProducer
from services.imaging.decoding import decode_image
from services.results.encoding import decode_map_png
from services.consumer.serve_client import InspectionClient
from services.imaging.geometry import prepare_frame, restore_map
from services.settings import ServiceSettings

from .conftest import ServedApp, png_bytes, texture

pytestmark = pytest.mark.integration

FRAMES = 8


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def send_frames(settings: ServiceSettings, count: int, first_seed: int) -> list[InspectionRequest]:
    with FrameProducer(settings) as producer:
        return [
            producer.send_image(png_bytes(texture(first_seed + i, size=(48 + 8 * (i % 3), 64))),
                                "alpha" if i % 2 else "beta", f"line-{i % 2}", f"http-frame-{first_seed + i}")
            for i in range(count)
        ]  # fmt: skip


def test_consumer_over_http_stores_results_publishes_events_and_reports_health(
    served_app: ServedApp, service_settings: ServiceSettings, read_topic: Callable[..., list[bytes]]
) -> None:
    settings = service_settings
    sent = send_frames(settings, FRAMES, first_seed=600)
    with FrameProducer(settings) as producer:
        stray = producer.send_image(png_bytes(texture(700)), "unregistered", "line-0", "http-frame-stray")
    client = HttpInspectionClient(served_app.http_url + "/", timeout_s=60, token=served_app.settings.serve_token)
    with FrameConsumer.connect(settings, inspect=client) as consumer, ConsumerHealthServer(
        consumer, consumer.metrics, client.reachable, port=0, stall_s=60.0, host="127.0.0.1"
    ) as health:
        base = f"http://127.0.0.1:{health.port}"
        before = requests.get(f"{base}/readyz", timeout=10)
        assert before.status_code == 503 and before.json()["joined_group"] is False
        stats = consumer.run(max_frames=FRAMES + 1, idle_timeout_s=30)
        assert requests.get(f"{base}/healthz", timeout=10).status_code == 200
        ready = requests.get(f"{base}/readyz", timeout=10)
        assert ready.status_code == 200, ready.text
        metrics = requests.get(f"{base}/metrics", timeout=10).text
    assert stats.results == FRAMES and dict(stats.dead_letters) == {"unknown_domain": 1} and stats.replays == 0
    assert f"inctrl_consumer_frames_consumed_total {FRAMES + 1}.0" in metrics
    assert f"inctrl_consumer_frames_committed_total {FRAMES + 1}.0" in metrics
    assert 'inctrl_consumer_dead_letters_total{reason="unknown_domain"} 1.0' in metrics

    events = [InspectionResult.from_bytes(value) for value in read_topic(settings.results_topic, FRAMES)]
    assert sorted(e.frame_id for e in events) == sorted(r.frame_id for r in sent)
    (letter,) = [DeadLetter.model_validate_json(v) for v in read_topic(settings.dead_letter_topic, 1)]
    assert letter.frame_id == stray.frame_id and "unregistered" in letter.detail

    # The HTTP path scores exactly as the Ray handle path does, and the stored map is the detector's map.
    requests_by_id = {request.frame_id: request for request in sent}
    ordered = [requests_by_id[event.frame_id] for event in events]
    handle = InspectionClient(served_app.app_name)
    images = [decode_image(r.image or b"") for r in ordered]
    frames = [DecodedFrame(request=r, image=i, pixels=prepare_frame(i, handle.input_size())) for r, i in zip(ordered, images)]
    direct = handle(frames)
    for event, frame, outcome in zip(events, frames, direct):
        stored = json.loads(served_app.store.get_bytes(event.bucket, event.result_key))
        assert stored["frame_id"] == event.frame_id and stored["reference_version"] == f"{event.domain}/v1"
        assert event.score == pytest.approx(outcome.score, abs=1e-6)
        stored_map = decode_map_png(served_app.store.get_bytes(event.bucket, event.map_key))
        assert stored_map.shape == frame.image.shape[1:]
        np.testing.assert_allclose(stored_map, restore_map(outcome.anomaly_map, *frame.image.shape[1:]), atol=1 / 65535)
        assert served_app.store.exists(event.bucket, event.overlay_key)


def test_frames_are_replayed_not_dead_lettered_while_serve_is_unreachable(
    served_app: ServedApp, service_settings: ServiceSettings, read_topic: Callable[..., list[bytes]]
) -> None:
    settings = service_settings
    sent = send_frames(settings, 4, first_seed=800)
    unreachable = HttpInspectionClient(f"http://127.0.0.1:{free_port()}/", timeout_s=5, max_attempts=2, initial_backoff_s=0.05)
    with FrameConsumer.connect(settings, inspect=unreachable) as stranded:
        def stop_once_replayed() -> None:  # not a fixed time: joining the group can take seconds on a loaded machine
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not (stranded.stats.polled >= len(sent) and stranded.stats.replays >= 1):
                time.sleep(0.1)
            stranded.stop()

        stopper = threading.Thread(target=stop_once_replayed)
        stopper.start()
        stats = stranded.run()
        stopper.join()
    assert stats.polled >= len(sent) and stats.replays >= 1
    assert stats.results == 0 and stats.commits == 0 and not stats.dead_letters

    with FrameConsumer.connect(settings, inspect=HttpInspectionClient(served_app.http_url, timeout_s=60, token=served_app.settings.serve_token)) as consumer:
        recovered = consumer.run(max_frames=len(sent), idle_timeout_s=30)
    assert recovered.results == len(sent) and not recovered.dead_letters
    events = [InspectionResult.from_bytes(value) for value in read_topic(settings.results_topic, len(sent))]
    assert sorted(e.frame_id for e in events) == sorted(r.frame_id for r in sent)
    assert read_topic(settings.dead_letter_topic, 1, timeout_s=1.0) == []


def test_inctrl_consume_runs_as_the_chart_configures_it_and_drains_on_sigterm(
    served_app: ServedApp, service_settings: ServiceSettings, read_topic: Callable[..., list[bytes]]
) -> None:
    settings = service_settings
    port = free_port()
    environment = {
        **os.environ,
        **settings.to_environment(),
        "INCTRL_SERVE_URL": served_app.http_url + "/",
        "INCTRL_METRICS_PORT": str(port),
    }
    sent = send_frames(settings, 3, first_seed=900)
    command = [str(Path(sys.executable).with_name("inctrl")), "consume"]
    process = subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        events = read_topic(settings.results_topic, len(sent), timeout_s=60)
        assert sorted(InspectionResult.from_bytes(v).frame_id for v in events) == sorted(r.frame_id for r in sent)
        deadline = time.monotonic() + 20
        while requests.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code != 200:
            assert time.monotonic() < deadline, "consumer never became ready"
            time.sleep(0.2)
        assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, stderr[-2000:]
    stats = json.loads(stdout.strip().splitlines()[-1])
    assert stats["results"] == len(sent) and stats["dead_letters"] == {}
