"""Stream bench: frames/s and latency through Kafka -> Serve -> S3 against the in-process detector.

Both sides use the same backbone, the same frames (synthetic, three lines' worth of domains) and the same
batch size. In-process: decode + one det.encode per batch + det.score per domain group (the engine the
replicas run). Stream: the consumer's wall time for the frames after a warm-up (group join, bank loads and
FAISS index builds excluded); latency percentiles are the consumer's poll-to-stored time per frame
(InspectionResult.latency_ms), which includes decoding, the Serve round trip and three S3 writes.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from model import InCTRLv2
from pipelines.synth import DOMAINS
from pipelines.synth.generator import generate
from services.registry.references import load_reference_images
from services.imaging.decoding import decode_image
from services.serving.backbone_choice import choose_detector
from services.serving.bank_cache import BankCache
from services.imaging.geometry import prepare_frame
from services.protocol.outcomes import FrameInput
from services.serving.engine import InspectionEngine
from inctrl.dev.local_service import LocalInspectionService, StreamFrame

logger = logging.getLogger(__name__)

TARGET_RATIO = 0.8


class StreamBenchOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    backbone: str = "tiny"
    frames: int = Field(96, ge=1)
    batch_size: int = Field(8, ge=1)
    domains: int = Field(3, ge=1, le=len(DOMAINS))
    work_dir: Path = Path(".bench")
    seed: int = 0


class StreamBenchReport(BaseModel):
    model_config = ConfigDict(frozen=True)

    backbone: str
    frames: int
    batch_size: int
    in_process_fps: float
    stream_fps: float
    latency_p50_ms: float
    latency_p95_ms: float
    latency_p99_ms: float
    stage_cpu_ms: dict[str, float]
    """CPU ms per frame by stage of the streamed run (consumer stages, ingress, replica)."""

    @property
    def ratio(self) -> float:
        return self.stream_fps / self.in_process_fps if self.in_process_fps else 0.0

    def render(self) -> str:
        verdict = "meets" if self.ratio >= TARGET_RATIO else "misses"
        rows = [
            ("backbone", self.backbone), ("frames", str(self.frames)), ("batch size", str(self.batch_size)),
            ("in-process frames/s", f"{self.in_process_fps:.1f}"), ("stream frames/s", f"{self.stream_fps:.1f}"),
            ("stream / in-process", f"{self.ratio:.0%} ({verdict} the {TARGET_RATIO:.0%} target)"),
            ("latency p50 ms", f"{self.latency_p50_ms:.1f}"), ("latency p95 ms", f"{self.latency_p95_ms:.1f}"),
            ("latency p99 ms", f"{self.latency_p99_ms:.1f}"),
            *((f"cpu ms/frame: {stage}", f"{ms:.2f}") for stage, ms in self.stage_cpu_ms.items()),
            ("cpu ms/frame: total", f"{sum(self.stage_cpu_ms.values()):.2f}"),
        ]  # fmt: skip
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def run_stream_bench(options: StreamBenchOptions) -> StreamBenchReport:
    """Measure both paths on the local stack; see the module docstring for what each number covers."""
    work = options.work_dir.resolve()
    domains = sorted(DOMAINS)[: options.domains]
    per_domain = -(-options.frames // len(domains))
    generate(work / "synth", options.seed, domains=domains, n_train=4, n_test_good=per_domain, n_test_defect=0)
    detector, note = choose_detector(options.backbone)
    logger.info("bench detector", extra={"note": note})
    checkpoint = detector.save(work / "checkpoint")
    frames = [
        StreamFrame(domain, f"line-{domain}", f"bench-{domain}-{path.stem}", path.read_bytes())
        for domain in domains
        for path in sorted((work / "synth" / domain / "test" / "good").glob("*.png"))
    ]
    frames = sorted(frames, key=lambda f: f.frame_id[::-1])[: options.frames]  # interleave the domains
    cores = os.cpu_count() or 1
    # One single-threaded replica per core (Ray gives an actor OMP_NUM_THREADS = its num_cpus): the way Serve
    # uses a host's cores, where the in-process detector uses them through torch's threads.
    with LocalInspectionService(work, num_cpus=cores + 1) as service:
        for domain in domains:
            service.registry.register(domain, domain, load_reference_images(str(work / "synth" / domain / "train" / "good")), detector)
        in_process_fps = _in_process_rate(detector, service, frames, options.batch_size)
        service.serve(
            {
                "checkpoint_uri": str(checkpoint), "backbone": detector.config.backbone, "nn_backend": "faiss",
                "registry_prefix": service.registry.uri,
                "batch": {"max_batch_size": options.batch_size, "batch_wait_timeout_s": 0.02},
                "pool": {"num_replicas": cores, "max_ongoing_requests": max(64, options.batch_size)},
            }
        )  # fmt: skip
        warmup = [StreamFrame(f.domain, f.line, f"warm-{f.frame_id}", f.image) for f in frames[: options.batch_size]]
        run = service.stream(frames, warmup)
    latencies = np.array([result.latency_ms for result in run.results])
    return StreamBenchReport(
        backbone=detector.backbone_id, frames=len(run.results), batch_size=options.batch_size,
        in_process_fps=in_process_fps, stream_fps=run.frames_per_s,
        latency_p50_ms=float(np.percentile(latencies, 50)), latency_p95_ms=float(np.percentile(latencies, 95)),
        latency_p99_ms=float(np.percentile(latencies, 99)),
        stage_cpu_ms={stage: 1000.0 * seconds / len(run.results) for stage, seconds in run.stage_cpu_s.items()},
    )  # fmt: skip


def _in_process_rate(detector: InCTRLv2, service: LocalInspectionService, frames: list[StreamFrame], batch_size: int) -> float:
    engine = InspectionEngine(detector, BankCache(service.registry, detector.device), lambda record: record.threshold, "in-process")

    def prepared(batch: list[StreamFrame]) -> list[FrameInput]:
        return [FrameInput(f.domain, prepare_frame(decode_image(f.image), engine.input_size)) for f in batch]

    engine.inspect(prepared(frames[:batch_size]))  # warm-up
    started = time.perf_counter()
    for start in range(0, len(frames), batch_size):
        engine.inspect(prepared(frames[start : start + batch_size]))
    return len(frames) / (time.perf_counter() - started)
