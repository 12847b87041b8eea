"""Prometheus metrics of the inspection service, in a registry of their own (rendered at /metrics).

Label values never come straight from a caller: a domain label is the domain's name only once the domain
is known to be registered (DomainLabels), else UNREGISTERED, so a client sending random domain names
cannot grow the number of series without bound. The consumer's metrics carry no domain label.
"""
from __future__ import annotations

import threading
from collections.abc import Iterable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
UNREGISTERED = "unregistered"


class DomainLabels:
    """The bounded set of domain label values: registered domains' names, and UNREGISTERED for the rest.

    A domain joins when the service has evidence that it is registered (a frame was scored against its
    bank, or the deployment config names it). Only admins register domains, so the set grows with the
    registry, never with what callers send.
    """

    def __init__(self, known: Iterable[str] = ()) -> None:
        self._known = set(known)
        self._lock = threading.Lock()

    def add(self, domain: str) -> None:
        with self._lock:
            self._known.add(domain)

    def __call__(self, domain: str) -> str:
        return domain if domain in self._known else UNREGISTERED


class InspectionMetrics:
    """Per-domain frame counts, errors, latency and batch sizes as seen by the ingress.

    Batch size is recorded per frame (the size of the backbone batch the frame was scored in), so its
    histogram weighs batches by how many frames they carried.
    """

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, domains: DomainLabels | None = None) -> None:
        self.domains = domains or DomainLabels()
        self.registry = CollectorRegistry()
        self.frames = Counter(
            "inctrl_frames", "Frames inspected, by domain and verdict.", ["domain", "verdict"], registry=self.registry
        )
        self.errors = Counter(
            "inctrl_errors", "Frames that got no score, by domain and reason.", ["domain", "reason"], registry=self.registry
        )
        self.latency = Histogram(
            "inctrl_inspect_latency_seconds", "Ingress-to-outcome latency per frame.", ["domain"],
            buckets=_LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.batch_size = Histogram(
            "inctrl_backbone_batch_size", "Size of the backbone batch each frame was scored in.",
            buckets=_BATCH_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.http_requests = Counter(
            "inctrl_http_requests", "HTTP requests by route and status.", ["route", "status"], registry=self.registry
        )

    def observe_outcome(self, domain: str, verdict: str | None, error: str | None, seconds: float) -> None:
        """Record one frame's outcome: a verdict, or the reason it failed; a scored frame's domain is registered."""
        if verdict is not None:
            self.domains.add(domain)
        domain = self.domains(domain)
        if error is not None:
            self.errors.labels(domain=domain, reason=error).inc()
        else:
            self.frames.labels(domain=domain, verdict=verdict or "unknown").inc()
        self.latency.labels(domain=domain).observe(seconds)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


class ConsumerMetrics:
    """What one frame consumer did: frames consumed, committed, inspected, dead-lettered; batch latency."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.consumed = Counter("inctrl_consumer_frames_consumed", "Frame messages polled from Kafka (replays included).", registry=self.registry)
        self.committed = Counter(
            "inctrl_consumer_frames_committed", "Frame messages whose offsets were committed.", registry=self.registry
        )
        self.results = Counter(
            "inctrl_consumer_results", "Frames stored and published as results, by verdict.", ["verdict"], registry=self.registry
        )
        self.dead_letters = Counter(
            "inctrl_consumer_dead_letters", "Frames sent to the dead-letter topic, by reason.", ["reason"], registry=self.registry
        )
        self.replayed_batches = Counter(
            "inctrl_consumer_replayed_batches",
            "Micro-batches rewound for replay because the inspection service was unreachable.",
            registry=self.registry,
        )
        self.stalls = Counter(
            "inctrl_consumer_stalls",
            "Times the consumer stalled and rewound its batches because infrastructure failed, by cause.",
            ["cause"], registry=self.registry,
        )  # fmt: skip
        self.frame_retries = Counter(
            "inctrl_consumer_frame_retries",
            "Inspection attempts of single frames after a failed (or retryable) attempt.",
            registry=self.registry,
        )
        self.batch_latency = Histogram(
            "inctrl_consumer_batch_seconds", "Poll-to-commit time of one micro-batch.",
            buckets=_LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.batch_size = Histogram(
            "inctrl_consumer_batch_frames", "Frames per micro-batch.", buckets=_BATCH_BUCKETS, registry=self.registry
        )
        self.stage_cpu = Counter(
            "inctrl_consumer_stage_cpu_seconds",
            "CPU seconds the consumer's threads spent per stage of the frame path (services/consumer/stage_clock.py).",
            ["stage"], registry=self.registry,
        )  # fmt: skip

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
