"""CPU time per stage of the frame path, as this process's threads spend it (time.thread_time).

Stages of the consumer: decode (bytes -> pixels, S3 fetch of referenced images included), prepare
(pixels -> backbone geometry), inspect (the client's side of the call: serialising, sending, parsing the
answer), encode (map restore, quantisation, PNG, overlay JPEG), store (the S3 writes of map, overlay,
original and result.json), publish (result events to Kafka) and commit (offsets). The stream bench
divides them by frames; /metrics exports them as inctrl_consumer_stage_cpu_seconds_total{stage}.
"""
from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager

STAGES = ("decode", "prepare", "inspect", "encode", "store", "publish", "commit")


class StageClock:
    """Thread-safe sums of CPU seconds by stage; `on_add` (e.g. a Prometheus counter) sees every addition."""

    def __init__(self, on_add: Callable[[str, float], None] | None = None) -> None:
        self._lock = threading.Lock()
        self._seconds: defaultdict[str, float] = defaultdict(float)
        self._on_add = on_add

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Charge the CPU time the calling thread spends inside the block to `name`."""
        if name not in STAGES:
            raise ValueError(f"unknown stage {name!r}; stages are {STAGES}")
        started = time.thread_time()
        try:
            yield
        finally:
            spent = time.thread_time() - started
            with self._lock:
                self._seconds[name] += spent
            if self._on_add is not None:
                self._on_add(name, spent)

    def snapshot(self) -> dict[str, float]:
        """CPU seconds by stage so far, every stage present."""
        with self._lock:
            return {name: self._seconds.get(name, 0.0) for name in STAGES}
