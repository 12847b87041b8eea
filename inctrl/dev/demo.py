"""End-to-end demo on embedded defaults: stack, synthetic data, training, registration, streaming, summary.

Cross-domain, as the method intends: the heads train on three synthetic products (washer, screw, grass)
and the service then inspects three others (capsule, pcb, brick) that it never trained on, each from its
own line, with K normal references per domain and thresholds calibrated from normal images only.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from model import InCTRLv2
from pipelines.metrics import image_auroc
from pipelines.synth.generator import generate
from pipelines.training.config import TrainConfig, TrainData
from pipelines.training.runner import TrainingError, run_training
from services.registry.references import load_reference_images
from services.serving.backbone_choice import choose_detector
from inctrl.dev.local_service import LocalInspectionService, StreamFrame

logger = logging.getLogger(__name__)

SERVED_DOMAINS = ("capsule", "pcb", "brick")
TRAINING_DOMAINS = ("washer", "screw", "grass")


class DemoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    work_dir: Path = Path(".demo")
    backbone: str | None = Field(None, description="None: ViT-B-16-plus-240 when its weights load, else EfficientNet-Lite0.")
    frames_per_line: int = Field(16, ge=2, description="Half normal, half defective.")
    shots: int = Field(4, ge=2, description="K reference images per served domain.")
    train_epochs: int = Field(2, ge=1)
    seed: int = 0


class DomainSummary(BaseModel):
    domain: str
    line: str
    frames: int
    flagged: int
    auroc: float
    threshold: float


class DemoSummary(BaseModel):
    backbone_note: str
    training_note: str
    frames: int
    flagged: int
    auroc: float
    frames_per_s: float
    latency_p50_ms: float
    latency_p95_ms: float
    results_location: str
    http_url: str
    domains: list[DomainSummary]
    seconds: float

    def render(self) -> str:
        lines = [
            f"backbone:   {self.backbone_note}",
            f"training:   {self.training_note}",
            f"frames:     {self.frames} from {len(self.domains)} lines, flagged {self.flagged}",
            f"AUROC:      {self.auroc:.3f} (image level, all lines, against the synthetic ground truth)",
            f"throughput: {self.frames_per_s:.1f} frames/s; latency p50 {self.latency_p50_ms:.0f} ms, p95 {self.latency_p95_ms:.0f} ms",
            f"results:    {self.results_location}",
            f"total time: {self.seconds:.0f} s",
            "console:    make console  (serves the operator console on this data at http://127.0.0.1:8080)",
            "",
            f"{'domain':<10} {'line':<8} {'frames':>6} {'flagged':>7} {'AUROC':>6} {'threshold':>9}",
        ]
        lines += [
            f"{d.domain:<10} {d.line:<8} {d.frames:>6} {d.flagged:>7} {d.auroc:>6.3f} {d.threshold:>9.3f}" for d in self.domains
        ]
        return "\n".join(lines)


_STEPS = ("synthetic data", "local stack", "training", "registering domains", "starting Serve", "streaming frames", "summary")


def _step(name: str) -> None:
    """One demo step begins: a progress record (the CLI draws it as a line on stderr)."""
    done = _STEPS.index(name)
    logger.info("demo step %d/%d: %s", done + 1, len(_STEPS), name,
                extra={"progress": {"task": f"demo: {name}", "done": done + 1, "total": len(_STEPS)}})  # fmt: skip


def run_demo(options: DemoOptions) -> DemoSummary:
    started = time.monotonic()
    work = options.work_dir.resolve()
    synth = work / "synth"
    half = options.frames_per_line // 2
    _step("synthetic data")
    generate(synth, options.seed, domains=[*SERVED_DOMAINS, *TRAINING_DOMAINS], n_train=2 * options.shots,
             n_test_good=options.frames_per_line - half, n_test_defect=half)  # fmt: skip
    detector, backbone_note = choose_detector(options.backbone)
    _step("local stack")
    with LocalInspectionService(work) as service:
        _step("training")
        checkpoint, training_note = _train(detector, synth, work, options)
        trained = InCTRLv2.load(checkpoint)
        _step("registering domains")
        for domain in SERVED_DOMAINS:
            normals = load_reference_images(str(synth / domain / "train" / "good"))
            service.registry.register(
                domain, domain, normals[: options.shots], trained,
                calibration_images=normals[options.shots :], source=str(synth / domain / "train" / "good"),
            )  # fmt: skip
        _step("starting Serve")
        http_url = service.serve(
            {
                "checkpoint_uri": str(checkpoint), "backbone": trained.config.backbone, "nn_backend": "faiss",
                "registry_prefix": service.registry.uri,
                "batch": {"max_batch_size": 8, "batch_wait_timeout_s": 0.02},
            }
        )  # fmt: skip
        frames, labels = _frames(synth)
        warmup = [StreamFrame(f.domain, f.line, f"warm-{f.frame_id}", f.image) for f in frames[:: len(frames) // 4][:4]]
        _step("streaming frames")
        run = service.stream(frames, warmup)
        thresholds = {domain: service.registry.show(domain).threshold for domain in SERVED_DOMAINS}
    _step("summary")
    by_id = {result.frame_id: result for result in run.results}
    missing = sorted(set(labels) - set(by_id))
    if missing:
        raise RuntimeError(f"demo: {len(missing)} frames got no result, e.g. {missing[:3]}")
    per_domain = []
    for index, domain in enumerate(SERVED_DOMAINS):
        ids = [frame.frame_id for frame in frames if frame.domain == domain]
        per_domain.append(
            DomainSummary(
                domain=domain, line=f"line-{index + 1}", frames=len(ids),
                flagged=sum(by_id[i].verdict == "anomalous" for i in ids),
                auroc=image_auroc([by_id[i].score for i in ids], [labels[i] for i in ids]), threshold=thresholds[domain],
            )  # fmt: skip
        )
    latencies = sorted(result.latency_ms for result in run.results)
    return DemoSummary(
        backbone_note=backbone_note, training_note=training_note, frames=len(by_id),
        flagged=sum(d.flagged for d in per_domain),
        auroc=image_auroc([by_id[i].score for i in labels], list(labels.values())),
        frames_per_s=run.frames_per_s,
        latency_p50_ms=latencies[len(latencies) // 2], latency_p95_ms=latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))],
        results_location=f"s3://{service.settings.results_bucket}/results/<domain>/<line>/<date>/<frame>/ on {service.settings.s3_endpoint}; "
        f"events on Kafka topic {service.settings.results_topic}; the data stays under {work / 'stack'} "
        f"(INCTRL_STACK_ROOT={work / 'stack'} deploy/stack.sh up serves it again)",
        http_url=http_url, domains=per_domain, seconds=time.monotonic() - started,
    )  # fmt: skip


def _train(detector: InCTRLv2, synth: Path, work: Path, options: DemoOptions) -> tuple[Path, str]:
    """Brief training of the heads with the project's Ray Train job on the training domains."""
    config = TrainConfig(
        model=detector.config,
        data=TrainData(dataset="mvtec", root=synth, categories=list(TRAINING_DOMAINS)),
        shots=2, epochs=options.train_epochs, batch_size=8, num_workers=1,
        output=str(work / "training"), run_name=f"demo-{int(time.time())}", seed=options.seed,
    )  # fmt: skip
    try:
        result = run_training(config)
    except TrainingError as error:
        logger.error("demo training failed; serving untrained heads", extra={"error": str(error)})
        fallback = detector.save(work / "untrained-checkpoint")
        return fallback, f"Ray Train run FAILED ({error}); serving UNTRAINED heads"
    last_epoch = result.history[-1] if result.history else {}
    losses = ", ".join(f"{k}={v:.3f}" for k, v in sorted(last_epoch.items()) if isinstance(v, float))
    note = f"Ray Train, {options.train_epochs} epochs on {', '.join(TRAINING_DOMAINS)} (never served); {losses}"
    return Path(result.checkpoint), note


def _frames(synth: Path) -> tuple[list[StreamFrame], dict[str, int]]:
    """Every test image of the served domains, line i for domain i, interleaved; labels 1 = defective."""
    frames, labels = [], {}
    for index, domain in enumerate(SERVED_DOMAINS):
        for path in sorted((synth / domain / "test").rglob("*.png")):
            label = int(path.parent.name != "good")
            frame_id = f"{domain}-{path.parent.name}-{path.stem}"
            frames.append(StreamFrame(domain, f"line-{index + 1}", frame_id, path.read_bytes()))
            labels[frame_id] = label
    frames.sort(key=lambda frame: (frame.frame_id.rsplit("-", 1)[1], frame.domain))
    return frames, labels
