"""The consumer pod's HTTP endpoints: /healthz (liveness), /readyz (readiness), /metrics (Prometheus).

    GET /healthz  200 while the consume loop polls; 503 once it has not polled for `stall_s` (stuck batch)
    GET /readyz   200 when the consumer has joined its group and the inspection service answers; else 503
    GET /metrics  the consumer's Prometheus metrics

Served by a stdlib threading HTTP server on its own daemon thread, so probes answer while a batch runs.
"""
from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Protocol

from services.metrics import ConsumerMetrics

logger = logging.getLogger(__name__)


class ConsumerProbe(Protocol):
    """What the endpoints ask the consumer (FrameConsumer implements it)."""

    def seconds_since_poll(self) -> float: ...

    def joined_group(self) -> bool: ...


class ConsumerHealthServer:
    """Start with `with ConsumerHealthServer(...) as server:`; `server.port` is the bound port."""

    def __init__(
        self,
        consumer: ConsumerProbe,
        metrics: ConsumerMetrics,
        serve_reachable: Callable[[], bool],
        port: int,
        stall_s: float,
        host: str = "0.0.0.0",
    ) -> None:
        self._consumer = consumer
        self._metrics = metrics
        self._serve_reachable = serve_reachable
        self._stall_s = stall_s
        self._server = ThreadingHTTPServer((host, port), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="consumer-health", daemon=True)

    @property
    def port(self) -> int:
        """The port the server listens on (the chosen one when constructed with port 0)."""
        return self._server.server_address[1]

    def start(self) -> None:
        """Serve on a daemon thread; returns at once."""
        self._thread.start()
        logger.info("consumer health server listening", extra={"port": self.port})

    def stop(self) -> None:
        """Stop serving and release the port (also when never started)."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()

    def __enter__(self) -> ConsumerHealthServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def liveness(self) -> tuple[bool, dict[str, object]]:
        """Alive unless the loop has not polled for stall_s."""
        since = self._consumer.seconds_since_poll()
        alive = since < self._stall_s
        return alive, {"status": "ok" if alive else "stalled", "seconds_since_poll": round(since, 3), "stall_s": self._stall_s}

    def readiness(self) -> tuple[bool, dict[str, object]]:
        """Ready when the consumer is in its group and the inspection service answers."""
        joined = self._consumer.joined_group()
        reachable = self._serve_reachable()
        ready = joined and reachable
        return ready, {"status": "ready" if ready else "not ready", "joined_group": joined, "serve_reachable": reachable}

    def metrics_text(self) -> bytes:
        """The consumer's metrics in the Prometheus text format."""
        return self._metrics.render()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/metrics":
                    self._send(HTTPStatus.OK, server.metrics_text(), ConsumerMetrics.content_type)
                elif self.path in ("/healthz", "/readyz"):
                    ok, body = server.liveness() if self.path == "/healthz" else server.readiness()
                    status = HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE
                    self._send(status, json.dumps(body).encode(), "application/json")
                else:
                    self._send(HTTPStatus.NOT_FOUND, json.dumps({"detail": f"no route {self.path}"}).encode(), "application/json")

            def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                # Probes hit these endpoints every few seconds; keep them out of the logs.
                return

        return Handler
