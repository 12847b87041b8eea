"""The consumer's /healthz, /readyz and /metrics server on a real port, driven by a controllable probe."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import requests

from services.consumer.health import ConsumerHealthServer
from services.metrics import ConsumerMetrics


@dataclass
class LoopState:
    """What a FrameConsumer would report, set by the test."""

    since_poll: float = 0.5
    joined: bool = False
    serve_up: bool = True

    def seconds_since_poll(self) -> float:
        return self.since_poll

    def joined_group(self) -> bool:
        return self.joined


@pytest.fixture
def state() -> LoopState:
    return LoopState()


@pytest.fixture
def metrics() -> ConsumerMetrics:
    return ConsumerMetrics()


@pytest.fixture
def base_url(state: LoopState, metrics: ConsumerMetrics) -> Iterator[str]:
    with ConsumerHealthServer(state, metrics, lambda: state.serve_up, port=0, stall_s=30.0, host="127.0.0.1") as server:
        yield f"http://127.0.0.1:{server.port}"


def test_liveness_fails_only_when_the_loop_stops_polling(base_url: str, state: LoopState) -> None:
    alive = requests.get(f"{base_url}/healthz", timeout=5)
    assert alive.status_code == 200 and alive.json()["status"] == "ok"
    state.since_poll = 31.0
    stalled = requests.get(f"{base_url}/healthz", timeout=5)
    assert stalled.status_code == 503 and stalled.json() == {"status": "stalled", "seconds_since_poll": 31.0, "stall_s": 30.0}


def test_readiness_needs_the_group_and_the_inspection_service(base_url: str, state: LoopState) -> None:
    def ready() -> tuple[int, dict[str, object]]:
        response = requests.get(f"{base_url}/readyz", timeout=5)
        return response.status_code, response.json()

    assert ready() == (503, {"status": "not ready", "joined_group": False, "serve_reachable": True})
    state.joined = True
    assert ready()[0] == 200
    state.serve_up = False
    assert ready() == (503, {"status": "not ready", "joined_group": True, "serve_reachable": False})


def test_metrics_are_served_in_prometheus_text(base_url: str, metrics: ConsumerMetrics) -> None:
    metrics.consumed.inc(5)
    metrics.committed.inc(4)
    metrics.dead_letters.labels(reason="undecodable_image").inc()
    metrics.batch_latency.observe(0.2)
    response = requests.get(f"{base_url}/metrics", timeout=5)
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/plain")
    assert "inctrl_consumer_frames_consumed_total 5.0" in response.text
    assert "inctrl_consumer_frames_committed_total 4.0" in response.text
    assert 'inctrl_consumer_dead_letters_total{reason="undecodable_image"} 1.0' in response.text
    assert "inctrl_consumer_batch_seconds_count 1.0" in response.text
    assert requests.get(f"{base_url}/nope", timeout=5).status_code == 404


def test_the_port_is_released_on_stop(state: LoopState, metrics: ConsumerMetrics) -> None:
    server = ConsumerHealthServer(state, metrics, lambda: True, port=0, stall_s=30.0, host="127.0.0.1")
    with server:
        port = server.port
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
    ConsumerHealthServer(state, metrics, lambda: True, port=port, stall_s=30.0, host="127.0.0.1").stop()
