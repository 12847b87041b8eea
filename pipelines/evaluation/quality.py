"""Offline quality run: train on some synthetic domains, evaluate on synthetic domains never seen in
training, for several backbones, and put the K-shot results side by side."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipelines.evaluation.harness import MEAN_ROW, METRIC_NAMES, EvaluationReport
from pipelines.evaluation.report import HEADERS
from pipelines.evaluation.runner import EvaluationRequest, run_evaluation
from pipelines.synth import generate
from pipelines.training import TrainConfig, TrainConfigError, TrainData, run_training

log = logging.getLogger(__name__)


class SynthSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seed: int = 0
    n_train: int = Field(16, ge=2)
    n_test_good: int = Field(8, ge=1)
    n_test_defect: int = Field(12, ge=1)
    size: int = Field(224, ge=32)


class QualityRun(BaseModel):
    """One backbone: `train` holds TrainConfig fields; data, output and run_name are filled in."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9._-]+$")
    train: dict[str, Any]


class QualityConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    out: Path
    synth: SynthSpec = Field(default_factory=SynthSpec, description="Synthetic data of the evaluation domains.")
    train_synth: SynthSpec | None = Field(
        None, description="Synthetic data of the training domains (more is free); None = the same as `synth`."
    )
    train_domains: list[str]
    eval_domains: list[str]
    shots: list[int] = [1, 2, 4]
    seeds: int = Field(3, ge=1)
    image_size: int = 224
    runs: list[QualityRun]

    @model_validator(mode="after")
    def _domains_disjoint(self) -> QualityConfig:
        overlap = sorted(set(self.train_domains) & set(self.eval_domains))
        if overlap:
            raise ValueError(f"evaluation domains must be unseen in training; both lists hold {overlap}")
        return self


def load_quality_config(path: Path | str) -> QualityConfig:
    path = Path(path)
    if not path.is_file():
        raise TrainConfigError(f"quality config {path} does not exist")
    try:
        return QualityConfig.model_validate(yaml.safe_load(path.read_text()))
    except (yaml.YAMLError, ValidationError) as exc:
        raise TrainConfigError(f"quality config {path} is invalid: {exc}") from exc


def comparison_table(reports: dict[str, EvaluationReport]) -> str:
    """Averages over the unseen domains, one row per backbone, method and K."""
    lines = ["| backbone | method | K | " + " | ".join(HEADERS[n] for n in METRIC_NAMES) + " |", "|---|---|---|" + "---|" * 4]
    for name, report in reports.items():
        for row in report.summary:
            if row.category == MEAN_ROW:
                cells = [
                    "n/a" if row.mean[n] is None else f"{100 * row.mean[n]:.1f} ± {100 * row.std[n]:.1f}" for n in METRIC_NAMES
                ]
                lines.append(f"| {name} | {row.method} | {row.shots} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_quality(config: QualityConfig) -> Path:
    """Generate the data, train and evaluate every run; returns the path of the comparison markdown."""
    started = time.perf_counter()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = config.out.resolve() / stamp
    data_root, train_root = out / "synth", out / "synth-train"
    spec, train_spec = config.synth, config.train_synth or config.synth
    # Two folders so that the training counts never change an evaluation image (each image has its own stream).
    for root, domains, counts in ((train_root, config.train_domains, train_spec), (data_root, config.eval_domains, spec)):
        generate(root, seed=counts.seed, domains=domains, n_train=counts.n_train, n_test_good=counts.n_test_good,
                 n_test_defect=counts.n_test_defect, size=counts.size)
    reports: dict[str, EvaluationReport] = {}
    timings: dict[str, float] = {}
    for run in config.runs:
        run_started = time.perf_counter()
        train_config = TrainConfig.model_validate(
            run.train
            | {
                "data": TrainData(dataset="mvtec", root=train_root, categories=config.train_domains),
                "output": str(out / "runs"),
                "run_name": run.name,
                "cache_dir": None,
            }
        )
        result = run_training(train_config)
        evaluation = run_evaluation(
            EvaluationRequest(
                dataset="mvtec", root=data_root, out=out / run.name, checkpoint=result.checkpoint,
                shots=tuple(config.shots), seeds=config.seeds, categories=tuple(config.eval_domains),
                image_size=config.image_size,
            )
        )
        reports[run.name] = evaluation.report
        timings[run.name] = time.perf_counter() - run_started
    notes = sorted({note for report in reports.values() for note in report.notes})
    document = "\n".join(
        [
            "# Quality run: unseen synthetic domains",
            "",
            f"- trained on: {config.train_domains}; evaluated on (never seen in training): {config.eval_domains}",
            f"- synthetic data: evaluation {spec.model_dump()}, training {train_spec.model_dump()}",
            f"- K = {config.shots}; prompt seeds: {config.seeds}",
            "- values: percent, mean over the unseen domains, ± std over prompt seeds",
            *[f"- {name}: {seconds:.0f} s (train + evaluate)" for name, seconds in timings.items()],
            *[f"- note: {note}" for note in notes],
            f"- total: {time.perf_counter() - started:.0f} s",
            "",
            comparison_table(reports),
            "",
        ]
    )
    path = out / "quality.md"
    path.write_text(document)
    log.info("quality run written to %s", path)
    return path
