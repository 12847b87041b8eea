"""The evaluation harness: per category, K and seed, sample prompts (the same for every method), build the
bank, score all test images in batches and compute image AUROC / AP, pixel AUROC and AUPRO."""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel

from model import InCTRLv2
from pipelines.datasets import ANOMALOUS, Sample, load_image, load_mask
from pipelines.evaluation.methods import INCTRL, MethodOutput, score_methods
from pipelines.manifest import PromptManifest, sample_prompts
from model.calibration import DomainCalibration, calibrate
from pipelines.metrics import aupro, image_ap, image_auroc, pixel_auroc, tpr_at_fpr

log = logging.getLogger(__name__)

METRIC_NAMES = ("image_auroc", "image_ap", "tpr_at_1fpr", "tpr_at_5fpr", "pixel_auroc", "aupro", "calibrated_fpr", "calibrated_recall")
KIND_METRICS = ("image_auroc", "tpr_at_1fpr", "tpr_at_5fpr")
MEAN_ROW = "mean"


class EvaluationError(ValueError):
    """The data cannot be evaluated as asked (a category without normal or anomalous test images...)."""


class Metrics(BaseModel):
    image_auroc: float
    image_ap: float
    tpr_at_1fpr: float | None = None  # image-level TPR at <= 1% / 5% FPR (pipelines.metrics.tpr_at_fpr)
    tpr_at_5fpr: float | None = None
    pixel_auroc: float | None = None
    aupro: float | None = None
    # At the threshold calibrated from the K prompts alone (model/calibration.py, target 1% FPR), as a
    # registered domain would be served: the test set's FPR and recall. InCTRLv2 only (the served detector).
    calibrated_fpr: float | None = None
    calibrated_recall: float | None = None


class KindRun(BaseModel):
    """One defect kind of one (category, method, K, seed) cell: the category's normals against that kind."""

    category: str
    method: str
    shots: int
    seed: int
    kind: str
    count: int
    metrics: dict[str, float]


class KindRow(BaseModel):
    """Mean and std over seeds of one defect kind."""

    category: str
    method: str
    shots: int
    kind: str
    count: int
    mean: dict[str, float]
    std: dict[str, float]


class RunResult(BaseModel):
    """One (category, method, K, seed) cell."""

    category: str
    method: str
    shots: int
    seed: int
    metrics: Metrics


class SummaryRow(BaseModel):
    """Mean and std over seeds; category "mean" is the average over categories (per seed, then over seeds)."""

    category: str
    method: str
    shots: int
    mean: dict[str, float | None]
    std: dict[str, float | None]


class EvaluationReport(BaseModel):
    dataset: str
    root: str
    checkpoint: str | None
    backbone_id: str
    methods: list[str]
    shots: list[int]
    seeds: list[int]
    categories: list[str]
    image_size: int
    notes: list[str]
    runs: list[RunResult]
    summary: list[SummaryRow]
    kinds: list[KindRow] = []  # per defect kind (the folder an anomalous image lies in), where a category has 2+
    seconds: float


@dataclass
class Example:
    """One anomalous test image with its mask and every method's map, for the montage."""

    category: str
    image: torch.Tensor  # (3, H, W)
    mask: torch.Tensor  # (H, W)
    maps: dict[str, torch.Tensor]


@dataclass
class Case:
    """A test image the served detector got wrong at its calibrated threshold, for the error montage."""

    category: str
    error: str  # "false positive" or "missed defect"
    path: str
    score: float
    margin: float  # (score - threshold) / threshold: how far on the wrong side
    image: torch.Tensor  # (3, H, W)
    mask: torch.Tensor  # (H, W)
    anomaly_map: torch.Tensor  # (H, W)
    calibration: DomainCalibration


@dataclass
class Evaluation:
    report: EvaluationReport
    curves: dict[tuple[str, int, str], tuple[np.ndarray, np.ndarray]]  # (category, K, method) -> first seed's (scores, labels)
    examples: list[Example]
    cases: list[Case] = field(default_factory=list)  # worst false positives and misses, worst first within each error


@dataclass
class EncodedCategory:
    """Test images of one category, encoded once and reused for every K and seed."""

    samples: list[Sample]
    embedding: torch.Tensor
    patches: torch.Tensor
    masks: np.ndarray | None  # (n, H, W) uint8, None when an anomalous image has no pixel annotation


def _encode_category(detector: InCTRLv2, samples: list[Sample], image_size: int, batch_size: int) -> EncodedCategory:
    embeddings, patches = [], []
    task = f"encoding {samples[0].category}"
    log.info("%s 0/%d", task, len(samples), extra={"progress": {"task": task, "done": 0, "total": len(samples)}})
    for start in range(0, len(samples), batch_size):
        images = torch.stack([load_image(s, image_size) for s in samples[start : start + batch_size]])
        e, p = detector.encode(images)
        embeddings.append(e.cpu())
        patches.append(p.cpu())
        done = min(start + batch_size, len(samples))
        log.info("%s %d/%d", task, done, len(samples), extra={"progress": {"task": task, "done": done, "total": len(samples)}})
    pixel_level = all(s.mask is not None for s in samples if s.label == ANOMALOUS)
    masks = np.stack([load_mask(s, image_size).numpy() for s in samples]) if pixel_level else None
    return EncodedCategory(samples, torch.cat(embeddings), torch.cat(patches), masks)


def _metrics(
    output_scores: np.ndarray, maps: np.ndarray | None, labels: np.ndarray, masks: np.ndarray | None, threshold: float | None
) -> Metrics:
    pixel = maps is not None and masks is not None
    flagged = output_scores >= threshold if threshold is not None else None
    return Metrics(
        image_auroc=image_auroc(output_scores, labels),
        image_ap=image_ap(output_scores, labels),
        tpr_at_1fpr=tpr_at_fpr(output_scores, labels, 0.01),
        tpr_at_5fpr=tpr_at_fpr(output_scores, labels, 0.05),
        pixel_auroc=pixel_auroc(maps, masks) if pixel else None,
        aupro=aupro(maps, masks) if pixel else None,
        calibrated_fpr=None if flagged is None else float(flagged[labels == 0].mean()),
        calibrated_recall=None if flagged is None else float(flagged[labels == ANOMALOUS].mean()),
    )


def defect_kind(sample: Sample) -> str:
    """The defect kind of an anomalous image: the folder it lies in (MVTec layout: test/<kind>/)."""
    return sample.image.parent.name


def _kind_runs(category: str, method: str, k: int, seed: int, scores: np.ndarray, labels: np.ndarray, kinds: list[str]) -> list[KindRun]:
    """Each kind's anomalies against all normals of the category; none when the category has one kind."""
    present = sorted({kind for kind, label in zip(kinds, labels) if label == ANOMALOUS})
    if len(present) < 2:
        return []
    runs = []
    for kind in present:
        keep = (labels != ANOMALOUS) | np.array([k_ == kind for k_ in kinds])
        kept_scores, kept_labels = scores[keep], labels[keep]
        metrics = {
            "image_auroc": image_auroc(kept_scores, kept_labels),
            "tpr_at_1fpr": tpr_at_fpr(kept_scores, kept_labels, 0.01),
            "tpr_at_5fpr": tpr_at_fpr(kept_scores, kept_labels, 0.05),
        }
        runs.append(KindRun(category=category, method=method, shots=k, seed=seed, kind=kind,
                            count=int((kept_labels == ANOMALOUS).sum()), metrics=metrics))  # fmt: skip
    return runs


def summarise_kinds(runs: Sequence[KindRun]) -> list[KindRow]:
    """Mean and std over seeds per (category, method, K, kind)."""
    cells: dict[tuple[str, str, int, str], list[KindRun]] = defaultdict(list)
    for run in runs:
        cells[(run.category, run.method, run.shots, run.kind)].append(run)
    return [
        KindRow(category=c, method=m, shots=k, kind=kind, count=group[0].count,
                mean={n: float(np.mean([r.metrics[n] for r in group])) for n in KIND_METRICS},
                std={n: float(np.std([r.metrics[n] for r in group])) for n in KIND_METRICS})  # fmt: skip
        for (c, m, k, kind), group in sorted(cells.items())
    ]


def _stats(values: list[float | None]) -> tuple[float | None, float | None]:
    if any(v is None for v in values):
        return None, None
    return float(np.mean(values)), float(np.std(values))


def summarise(runs: Sequence[RunResult], categories: Sequence[str]) -> list[SummaryRow]:
    """Per category and averaged over categories: mean and std over seeds."""
    cells: dict[tuple[str, int], dict[str, dict[int, Metrics]]] = defaultdict(lambda: defaultdict(dict))
    for run in runs:
        cells[(run.method, run.shots)][run.category][run.seed] = run.metrics
    rows = []
    for (method, shots), per_category in sorted(cells.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        seeds = sorted(next(iter(per_category.values())))
        for category in [*categories, MEAN_ROW]:
            mean, std = {}, {}
            for name in METRIC_NAMES:
                if category == MEAN_ROW:
                    per_seed = [[getattr(per_category[c][s], name) for c in categories] for s in seeds]
                    values = [None if None in v else float(np.mean(v)) for v in per_seed]
                else:
                    values = [getattr(per_category[category][s], name) for s in seeds]
                mean[name], std[name] = _stats(values)
            rows.append(SummaryRow(category=category, method=method, shots=shots, mean=mean, std=std))
    return rows


def _load_prompts(manifest: PromptManifest, by_path: dict[str, Sample], category: str, seed: int, image_size: int) -> torch.Tensor:
    """The (K, 3, S, S) prompt images of one category and seed."""
    return torch.stack([load_image(by_path[str(p)], image_size) for p in manifest.prompt_paths(category, seed)])


def evaluate(
    detector: InCTRLv2,
    samples: Sequence[Sample],
    *,
    methods: list[str],
    shots: Sequence[int],
    seeds: Sequence[int],
    dataset: str,
    root: Path | str,
    checkpoint: str | None,
    notes: list[str],
    image_size: int = 256,
    batch_size: int = 32,
    allow_test_normals: bool = False,
    examples_per_category: int = 2,
) -> Evaluation:
    """Score every test image of every category for each K and seed with every method."""
    started = time.perf_counter()
    categories = sorted({s.category for s in samples if s.split == "test"})
    if not categories:
        raise EvaluationError(f"{dataset} at {root}: no test images to evaluate")
    manifests = {k: sample_prompts(samples, k, seeds, dataset=dataset, root=root, allow_test_normals=allow_test_normals) for k in shots}
    by_path = {str(s.image): s for s in samples}
    runs: list[RunResult] = []
    kind_runs: list[KindRun] = []
    curves: dict[tuple[str, int, str], tuple[np.ndarray, np.ndarray]] = {}
    examples: list[Example] = []
    cases: list[Case] = []
    cells, total_cells = 0, len(categories) * len(shots) * len(seeds)
    log.info("evaluation 0/%d", total_cells, extra={"progress": {"task": "evaluation", "done": 0, "total": total_cells}})
    for category in categories:
        tests = [s for s in samples if s.category == category and s.split == "test"]
        labels_all = np.array([s.label for s in tests])
        if labels_all.min() == labels_all.max():
            raise EvaluationError(f"category {category!r} needs normal and anomalous test images, has only label {labels_all[0]}")
        encoded = _encode_category(detector, tests, image_size, batch_size)
        index = {s.image: i for i, s in enumerate(tests)}
        for k in shots:
            for seed_number, seed in enumerate(seeds):
                prompts, class_name = _load_prompts(manifests[k], by_path, category, seed, image_size), category.replace("_", " ")
                calibration = None
                if INCTRL in methods and k >= 2:  # the served detector's thresholds, as registering the prompts would set them
                    bank, calibration = calibrate(detector, prompts, class_name)
                else:
                    bank = detector.build_prompt_bank(prompts, class_name)
                rows = np.array([index[s.image] for s in manifests[k].query_samples(tests, category, seed)])
                outputs: dict[str, list[MethodOutput]] = defaultdict(list)
                for start in range(0, len(rows), batch_size):
                    chunk = torch.from_numpy(rows[start : start + batch_size])
                    batch = score_methods(
                        detector, encoded.embedding[chunk], encoded.patches[chunk], bank, (image_size, image_size), methods
                    )
                    for method, output in batch.items():
                        outputs[method].append(output)
                labels = labels_all[rows]
                masks = encoded.masks[rows] if encoded.masks is not None else None
                for method, parts in outputs.items():
                    scores = torch.cat([p.scores for p in parts]).numpy()
                    maps = torch.cat([p.maps for p in parts]).numpy() if parts[0].maps is not None else None
                    threshold = calibration.threshold if calibration is not None and method == INCTRL else None
                    metrics = _metrics(scores, maps, labels, masks, threshold)
                    runs.append(RunResult(category=category, method=method, shots=k, seed=seed, metrics=metrics))
                    kind_runs += _kind_runs(category, method, k, seed, scores, labels, [defect_kind(tests[r]) for r in rows])
                    if threshold is not None and maps is not None and k == max(shots) and seed_number == 0:
                        cases += _cases(category, tests, rows, labels, scores, maps, calibration, image_size)  # type: ignore[arg-type]
                    if seed_number == 0:
                        curves[(category, k, method)] = (scores, labels)
                    log.info("evaluated category=%s method=%s K=%d seed=%d %s", category, method, k, seed, metrics.model_dump(),
                             extra={"category": category, "method": method, "shots": k, "seed": seed, **metrics.model_dump()})
                if k == max(shots) and seed_number == 0:
                    examples += _examples(category, tests, rows, labels, outputs, image_size, examples_per_category)
                cells += 1
                log.info("evaluation %d/%d", cells, total_cells, extra={"progress": {"task": "evaluation", "done": cells, "total": total_cells}})
    report = EvaluationReport(
        dataset=dataset, root=str(root), checkpoint=checkpoint, backbone_id=detector.backbone_id, methods=methods,
        shots=list(shots), seeds=list(seeds), categories=categories, image_size=image_size, notes=notes, runs=runs,
        summary=summarise(runs, categories), kinds=summarise_kinds(kind_runs), seconds=round(time.perf_counter() - started, 1),
    )
    worst = {error: sorted((c for c in cases if c.error == error), key=lambda c: -c.margin)[:MONTAGE_PER_ERROR] for error in ERRORS}
    return Evaluation(report, curves, examples, [case for error in ERRORS for case in worst[error]])


MONTAGE_PER_ERROR = 6
ERRORS = ("false positive", "missed defect")


def _cases(
    category: str, tests: list[Sample], rows: np.ndarray, labels: np.ndarray, scores: np.ndarray, maps: np.ndarray,
    calibration: DomainCalibration, image_size: int, per_category: int = 2,
) -> list[Case]:
    """The highest-scoring normals and lowest-scoring defects of a category, with how far they sit on the
    wrong side of the calibrated threshold (negative: right side, the closest calls)."""
    threshold = max(calibration.threshold, 1e-6)
    normals = [i for i in np.argsort(-scores) if labels[i] != ANOMALOUS][:per_category]
    defects = [i for i in np.argsort(scores) if labels[i] == ANOMALOUS][:per_category]
    picked = [(i, ERRORS[0], (scores[i] - threshold) / threshold) for i in normals]
    picked += [(i, ERRORS[1], (threshold - scores[i]) / threshold) for i in defects]
    return [
        Case(category, error, str(tests[rows[i]].image), float(scores[i]), float(margin), load_image(tests[rows[i]], image_size),
             _montage_mask(tests[rows[i]], image_size), torch.from_numpy(np.asarray(maps[i])), calibration)  # fmt: skip
        for i, error, margin in picked
    ]


def _montage_mask(sample: Sample, image_size: int) -> torch.Tensor:
    """The mask to outline in the montage; defects without a pixel annotation (e.g. the textiles) show none."""
    if sample.mask is None and sample.label == ANOMALOUS:
        return torch.zeros(image_size, image_size, dtype=torch.uint8)
    return load_mask(sample, image_size)


def _examples(
    category: str, tests: list[Sample], rows: np.ndarray, labels: np.ndarray,
    outputs: dict[str, list[MethodOutput]], image_size: int, count: int,
) -> list[Example]:
    maps = {m: torch.cat([p.maps for p in parts]) for m, parts in outputs.items() if parts[0].maps is not None}
    picked = [i for i in range(len(rows)) if labels[i] == ANOMALOUS and tests[rows[i]].mask is not None][:count]
    return [
        Example(category, load_image(tests[rows[i]], image_size), load_mask(tests[rows[i]], image_size), {m: v[i] for m, v in maps.items()})
        for i in picked
    ]
