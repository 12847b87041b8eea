"""Offline quality run: train on some synthetic domains, evaluate on synthetic domains never seen in
training (and on the conformal-clip-data textiles), for several backbones and training seeds, and put
the served detector next to the training-free baselines."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import ray
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

import numpy as np

from pipelines.evaluation.harness import MEAN_ROW, METRIC_NAMES, EvaluationReport
from pipelines.evaluation.methods import INCTRL, PATCH_NN
from pipelines.evaluation.report import HEADERS
from pipelines.evaluation.runner import EvaluationRequest, run_evaluation
from pipelines.evaluation.textiles import TextileSpec, write_textile_layout
from pipelines.synth import generate
from pipelines.training import TrainConfig, TrainConfigError, TrainData, run_training, start_ray

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
    training_seeds: list[int] = Field([0], min_length=1, description="One training run per seed and backbone.")
    textiles: TextileSpec | None = Field(None, description="Also evaluate on the conformal-clip-data textiles.")
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
    lines = ["| backbone | method | K | " + " | ".join(HEADERS[n] for n in METRIC_NAMES) + " |", "|---|---|---|" + "---|" * len(METRIC_NAMES)]
    for name, report in reports.items():
        for row in report.summary:
            if row.category == MEAN_ROW:
                cells = [
                    "n/a" if row.mean[n] is None else f"{100 * row.mean[n]:.1f} ± {100 * row.std[n]:.1f}" for n in METRIC_NAMES
                ]
                lines.append(f"| {name} | {row.method} | {row.shots} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


SYNTHETIC = "synthetic"


def _row_values(report: EvaluationReport, method: str, shots: int, categories: list[str] | None) -> dict[str, float | None]:
    """Mean over prompt seeds of the mean over `categories` (None: the report's MEAN_ROW)."""
    values: dict[str, float | None] = {}
    for name in METRIC_NAMES:
        if categories is None:
            row = next(r for r in report.summary if r.category == MEAN_ROW and r.method == method and r.shots == shots)
            values[name] = row.mean[name]
        else:
            rows = [r for r in report.summary if r.category in categories and r.method == method and r.shots == shots]
            picked = [r.mean[name] for r in rows]
            values[name] = None if not picked or None in picked else float(np.mean(picked))
    return values


def seed_table(results: dict[str, dict[int, dict[str, EvaluationReport]]], shots: int) -> str:
    """Served detector vs patch-nn per evaluation row at K = `shots`: mean and std over training seeds."""
    lines = [
        "| backbone | evaluation set | method | " + " | ".join(HEADERS[n] for n in METRIC_NAMES) + " |",
        "|---|---|---|" + "---|" * len(METRIC_NAMES),
    ]
    for backbone, per_seed in results.items():
        first = next(iter(per_seed.values()))
        rows: list[tuple[str, str, list[str] | None]] = [(SYNTHETIC, SYNTHETIC, None)]
        rows += [(c, name, [c]) for name, report in first.items() if name != SYNTHETIC for c in report.categories]
        for label, evaluation, categories in rows:
            for method in (INCTRL, PATCH_NN):
                if method not in first[evaluation].methods:
                    continue
                per = [_row_values(reports[evaluation], method, shots, categories) for reports in per_seed.values()]
                cells = []
                for name in METRIC_NAMES:
                    found = [p[name] for p in per]
                    cells.append("n/a" if None in found else f"{100 * np.mean(found):.1f} ± {100 * np.std(found):.1f}")
                lines.append(f"| {backbone} | {label} | {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


RAY_START_ATTEMPTS = 3


def _start_shared_ray(temp_dir: Path) -> None:
    """One local Ray for every training run; its start is retried, since on a loaded machine the raylet
    can miss Ray's startup deadline (infrastructure trouble, not a bad config)."""
    for attempt in range(1, RAY_START_ATTEMPTS + 1):
        try:
            start_ray(temp_dir=temp_dir, worker_logs=True)
            return
        except Exception as exc:  # noqa: BLE001 - ray.init raises a bare Exception on a startup timeout
            ray.shutdown()
            if attempt == RAY_START_ATTEMPTS:
                raise
            log.warning("local Ray did not start (attempt %d/%d): %s; retrying", attempt, RAY_START_ATTEMPTS, exc)


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
    evaluations = {SYNTHETIC: ("mvtec", data_root, tuple(config.eval_domains))}
    if config.textiles is not None:
        textile_root = out / "textiles"
        evaluations["textiles"] = ("folder", textile_root, tuple(write_textile_layout(textile_root, config.textiles)))
    reports: dict[str, EvaluationReport] = {}  # first training seed: the per-K table
    results: dict[str, dict[int, dict[str, EvaluationReport]]] = {}
    timings: dict[str, float] = {}
    total = len(config.runs) * len(config.training_seeds)
    own_ray = not ray.is_initialized()
    if own_ray:
        _start_shared_ray(TrainConfig.model_fields["ray_temp_dir"].default)
    try:
        for run in config.runs:
            run_started = time.perf_counter()
            results[run.name] = {}
            for seed in config.training_seeds:
                done = sum(len(v) for v in results.values())
                log.info("quality run %d/%d: %s training seed %d", done + 1, total, run.name, seed)
                name = f"{run.name}-seed{seed}"
                train_config = TrainConfig.model_validate(
                    run.train
                    | {
                        "data": TrainData(dataset="mvtec", root=train_root, categories=config.train_domains),
                        "output": str(out / "runs"),
                        "run_name": name,
                        "cache_dir": None,
                        "seed": seed,
                    }
                )
                result = run_training(train_config)
                results[run.name][seed] = {}
                for evaluation, (dataset, root, categories) in evaluations.items():
                    results[run.name][seed][evaluation] = run_evaluation(
                        EvaluationRequest(
                            dataset=dataset, root=root, out=out / name / evaluation, checkpoint=result.checkpoint,
                            shots=tuple(config.shots), seeds=config.seeds, categories=categories, image_size=config.image_size,
                        )
                    ).report
            reports[run.name] = results[run.name][config.training_seeds[0]][SYNTHETIC]
            timings[run.name] = time.perf_counter() - run_started
    finally:
        if own_ray:
            ray.shutdown()
    notes = sorted({note for report in reports.values() for note in report.notes})
    document = "\n".join(
        [
            "# Quality run: unseen synthetic domains",
            "",
            f"- trained on: {config.train_domains}; evaluated on (never seen in training): {config.eval_domains}",
            f"- synthetic data: evaluation {spec.model_dump()}, training {train_spec.model_dump()}",
            f"- K = {config.shots}; prompt seeds: {config.seeds}; training seeds: {config.training_seeds}",
            f"- textiles: {config.textiles.model_dump() if config.textiles else 'not evaluated'}",
            *[f"- {name}: {seconds:.0f} s (train + evaluate, all training seeds)" for name, seconds in timings.items()],
            *[f"- note: {note}" for note in notes],
            f"- total: {time.perf_counter() - started:.0f} s",
            "",
            f"## Served detector vs patch baseline, K = {max(config.shots)}: mean ± std over training seeds",
            "",
            "(each value: mean over prompt seeds and, for `synthetic`, over the unseen domains)",
            "",
            seed_table(results, max(config.shots)),
            "",
            f"## Unseen synthetic domains per K, training seed {config.training_seeds[0]}: mean ± std over prompt seeds",
            "",
            comparison_table(reports),
            "",
        ]
    )
    path = out / "quality.md"
    path.write_text(document)
    log.info("quality run written to %s", path)
    return path
