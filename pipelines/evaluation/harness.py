"""The evaluation harness: per category, K and seed, sample prompts (the same for every method), build the
bank, score all test images in batches and compute image AUROC / AP, pixel AUROC and AUPRO."""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel

from model import InCTRLv2
from pipelines.datasets import ANOMALOUS, Sample, load_image, load_mask
from pipelines.evaluation.methods import MethodOutput, score_methods
from pipelines.manifest import PromptManifest, sample_prompts
from pipelines.metrics import aupro, image_ap, image_auroc, pixel_auroc

log = logging.getLogger(__name__)

METRIC_NAMES = ("image_auroc", "image_ap", "pixel_auroc", "aupro")
MEAN_ROW = "mean"


class EvaluationError(ValueError):
    """The data cannot be evaluated as asked (a category without normal or anomalous test images...)."""


class Metrics(BaseModel):
    image_auroc: float
    image_ap: float
    pixel_auroc: float | None = None
    aupro: float | None = None


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
    seconds: float


@dataclass
class Example:
    """One anomalous test image with its mask and every method's map, for the montage."""

    category: str
    image: torch.Tensor  # (3, H, W)
    mask: torch.Tensor  # (H, W)
    maps: dict[str, torch.Tensor]


@dataclass
class Evaluation:
    report: EvaluationReport
    curves: dict[tuple[str, int, str], tuple[np.ndarray, np.ndarray]]  # (category, K, method) -> first seed's (scores, labels)
    examples: list[Example]


@dataclass
class EncodedCategory:
    """Test images of one category, encoded once and reused for every K and seed."""

    samples: list[Sample]
    embedding: torch.Tensor
    patches: torch.Tensor
    masks: np.ndarray | None  # (n, H, W) uint8, None when an anomalous image has no pixel annotation


def _encode_category(detector: InCTRLv2, samples: list[Sample], image_size: int, batch_size: int) -> EncodedCategory:
    embeddings, patches = [], []
    for start in range(0, len(samples), batch_size):
        images = torch.stack([load_image(s, image_size) for s in samples[start : start + batch_size]])
        e, p = detector.encode(images)
        embeddings.append(e.cpu())
        patches.append(p.cpu())
    pixel_level = all(s.mask is not None for s in samples if s.label == ANOMALOUS)
    masks = np.stack([load_mask(s, image_size).numpy() for s in samples]) if pixel_level else None
    return EncodedCategory(samples, torch.cat(embeddings), torch.cat(patches), masks)


def _metrics(output_scores: np.ndarray, maps: np.ndarray | None, labels: np.ndarray, masks: np.ndarray | None) -> Metrics:
    pixel = maps is not None and masks is not None
    return Metrics(
        image_auroc=image_auroc(output_scores, labels),
        image_ap=image_ap(output_scores, labels),
        pixel_auroc=pixel_auroc(maps, masks) if pixel else None,
        aupro=aupro(maps, masks) if pixel else None,
    )


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
    curves: dict[tuple[str, int, str], tuple[np.ndarray, np.ndarray]] = {}
    examples: list[Example] = []
    for category in categories:
        tests = [s for s in samples if s.category == category and s.split == "test"]
        labels_all = np.array([s.label for s in tests])
        if labels_all.min() == labels_all.max():
            raise EvaluationError(f"category {category!r} needs normal and anomalous test images, has only label {labels_all[0]}")
        encoded = _encode_category(detector, tests, image_size, batch_size)
        index = {s.image: i for i, s in enumerate(tests)}
        for k in shots:
            for seed_number, seed in enumerate(seeds):
                bank = detector.build_prompt_bank(
                    _load_prompts(manifests[k], by_path, category, seed, image_size), class_name=category.replace("_", " ")
                )
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
                    metrics = _metrics(scores, maps, labels, masks)
                    runs.append(RunResult(category=category, method=method, shots=k, seed=seed, metrics=metrics))
                    if seed_number == 0:
                        curves[(category, k, method)] = (scores, labels)
                    log.info("evaluated category=%s method=%s K=%d seed=%d %s", category, method, k, seed, metrics.model_dump(),
                             extra={"category": category, "method": method, "shots": k, "seed": seed, **metrics.model_dump()})
                if k == max(shots) and seed_number == 0:
                    examples += _examples(category, tests, rows, labels, outputs, image_size, examples_per_category)
    report = EvaluationReport(
        dataset=dataset, root=str(root), checkpoint=checkpoint, backbone_id=detector.backbone_id, methods=methods,
        shots=list(shots), seeds=list(seeds), categories=categories, image_size=image_size, notes=notes, runs=runs,
        summary=summarise(runs, categories), seconds=round(time.perf_counter() - started, 1),
    )
    return Evaluation(report, curves, examples)


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
