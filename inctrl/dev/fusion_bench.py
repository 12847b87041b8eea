"""`inctrl bench fusion`: candidate image-score fusions on the same components, per category (dev only).

Every candidate is a FusionConfig of the standardised fusion (model/fusion.py) applied to the SAME per-query
components and leave-one-out reference values (max M_x, g, a, s_i; the bank carries its exposure views as
served), so a difference between two columns is the fusion rule and nothing else. `served` is the default;
"+ a" is s_i 0.25, g 0.1 and the appearance distance a 0.25; "one-sided" is gate 0 (model/fusion.py). With ``shifted``, each
category also gets a "<category>/shifted" row: its normal test images against global-shift copies of
themselves (contrast, tint, a half-strength blur, a zoom), the class of defect the global distance g is
there for (and the appearance distance a); the validation the fusion is chosen on is the training domains with
and without those shifts.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from inctrl.dev.bench_inputs import CategoryInputs, bench_inputs, encode_samples
from model import InCTRLv2
from model.config import FusionConfig
from model.fusion import StandardisedFusion
from pipelines.datasets.image_loading import load_image
from pipelines.datasets.sample import ANOMALOUS, NORMAL
from pipelines.metrics import image_auroc, tpr_at_fpr

PATCH_ONLY = "max M_x"
_WITH_A = {"image": 0.25, "patch": 1.0, "global": 0.1, "appearance": 0.25}
_ALL_QUARTER = {"image": 0.25, "patch": 1.0, "global": 0.25, "appearance": 0.25}
CANDIDATES: dict[str, FusionConfig] = {
    "served": FusionConfig(),
    "one-sided + a": FusionConfig(weights=_WITH_A, gate=0.0),
    "two-sided + a": FusionConfig(weights=_WITH_A),
    "all .25, two-sided": FusionConfig(weights=_ALL_QUARTER),
    "all .25, one-sided": FusionConfig(weights=_ALL_QUARTER, gate=0.0),
    "a .5, one-sided": FusionConfig(weights={**_WITH_A, "appearance": 0.5}, gate=0.0),
    "a .5, no g, one-sided": FusionConfig(weights={"image": 0.25, "patch": 1.0, "appearance": 0.5}, gate=0.0),
    "no a, one-sided": FusionConfig(weights={"image": 0.25, "patch": 1.0, "global": 0.1}, gate=0.0),
    "no g, one-sided": FusionConfig(weights={"image": 0.25, "patch": 1.0, "appearance": 0.25}, gate=0.0),
    "no s_i, one-sided": FusionConfig(weights={"patch": 1.0, "global": 0.1, "appearance": 0.25}, gate=0.0),
    "gate 2 + a": FusionConfig(weights=_WITH_A, gate=2.0),
}
SHIFT_KINDS = ("contrast", "tint", "blur", "zoom")


def global_shift(image: torch.Tensor, kind: str, generator: torch.Generator) -> torch.Tensor:
    """(C, H, W) in [0, 1] -> the same image under one mild global shift of ``kind`` (SHIFT_KINDS)."""

    def between(low: float, high: float) -> float:
        sign = 1.0 if torch.rand(1, generator=generator).item() < 0.5 else -1.0
        return sign * (low + (high - low) * torch.rand(1, generator=generator).item())

    if kind == "contrast":
        mean = image.mean(dim=(1, 2), keepdim=True)
        shifted = mean + (image - mean) * (1.0 + between(0.15, 0.3))
    elif kind == "tint":
        shifted = image * (1.0 + torch.tensor([between(0.05, 0.1) for _ in range(image.shape[0])]).view(-1, 1, 1))
    elif kind == "blur":
        shifted = 0.5 * image + 0.5 * F.avg_pool2d(image[None], 3, stride=1, padding=1, count_include_pad=False)[0]
    elif kind == "zoom":
        side = image.shape[-1]
        keep = round(side * (1.0 - abs(between(0.07, 0.12))))
        start = (side - keep) // 2
        crop = image[None, :, start : start + keep, start : start + keep]
        shifted = F.interpolate(crop, size=image.shape[-2:], mode="bicubic", align_corners=False, antialias=True)[0]
    else:
        raise ValueError(f"unknown global shift {kind!r}; known: {SHIFT_KINDS}")
    return shifted.clamp(0.0, 1.0)


@dataclass
class Scored:
    """One draw of one category: components per query and their LOO reference values."""

    labels: np.ndarray
    components: dict[str, torch.Tensor]
    references: dict[str, torch.Tensor]


@dataclass
class CategoryResult:
    auroc: dict[str, list[float]] = field(default_factory=dict)
    tpr_at_1: dict[str, list[float]] = field(default_factory=dict)

    def add(self, name: str, labels: np.ndarray, scores: np.ndarray) -> None:
        self.auroc.setdefault(name, []).append(image_auroc(scores, labels))
        self.tpr_at_1.setdefault(name, []).append(tpr_at_fpr(scores, labels, 0.01))


def evaluate(scored: list[Scored], candidates: Mapping[str, FusionConfig]) -> CategoryResult:
    """Every candidate's AUROC and TPR at 1% FPR on every draw, plus max M_x alone."""
    result = CategoryResult()
    for draw in scored:
        result.add(PATCH_ONLY, draw.labels, draw.components["patch"].cpu().numpy())
        for name, config in candidates.items():
            fusion = StandardisedFusion(config.weights, config.floor, config.temperature, config.gate)
            result.add(name, draw.labels, fusion(draw.components, draw.references).cpu().numpy())
    return result


@torch.inference_mode()
def score_category(detector: InCTRLv2, inputs: CategoryInputs, size: int, shifted: bool) -> dict[str, list[Scored]]:
    """The components of every draw: the category as it is and, with ``shifted``, normals vs their global shifts."""
    test = inputs.test
    category = inputs.category
    labels = np.array([s.label == ANOMALOUS for s in test])
    embedding, patches = encode_samples(detector, test, size)
    sets = {category: (labels, embedding, patches)}
    if shifted:
        normals = [s for s in test if s.label == NORMAL]
        generator = torch.Generator().manual_seed(0)
        images = torch.stack([global_shift(load_image(s, size), SHIFT_KINDS[i % len(SHIFT_KINDS)], generator) for i, s in enumerate(normals)])
        shift_embedding, shift_patches = detector.encode(images.to(detector.device))
        keep = torch.from_numpy(~labels)
        sets[f"{category}/shifted"] = (
            np.concatenate([np.zeros(len(normals), bool), np.ones(len(normals), bool)]),
            torch.cat([embedding[keep], shift_embedding]),
            torch.cat([patches[keep], shift_patches]),
        )
    found: dict[str, list[Scored]] = {name: [] for name in sets}
    for draw in inputs.prompts:
        bank = detector.build_prompt_bank(inputs.references(draw, size).to(detector.device), inputs.class_name)
        reference_values = detector.reference_components(bank)
        for name, (set_labels, set_embedding, set_patches) in sets.items():
            outputs = detector.head_outputs(set_embedding, set_patches, bank)
            found[name].append(Scored(set_labels, detector.components(outputs, set_embedding, set_patches, bank), reference_values))
    return found


def render(results: Mapping[str, CategoryResult], names: list[str]) -> str:
    """AUROC / TPR@1%FPR per category and candidate (means over draws), then the mean row."""
    lines = ["| category | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for category, result in results.items():
        cells = [f"{100 * np.mean(result.auroc[n]):.2f} / {100 * np.mean(result.tpr_at_1[n]):.0f}" for n in names]
        lines.append(f"| {category} | " + " | ".join(cells) + " |")
    if len(results) > 1:
        cells = [
            f"{100 * np.mean([np.mean(r.auroc[n]) for r in results.values()]):.2f} / "
            f"{100 * np.mean([np.mean(r.tpr_at_1[n]) for r in results.values()]):.0f}"
            for n in names
        ]
        lines.append("| **mean** | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def score_rows(
    checkpoint: Path, dataset: str, root: Path, categories: list[str] | None, shots: int, seeds: int, shifted: bool
) -> dict[str, list[Scored]]:
    """Every row's draws (score_category) for the chosen categories of one dataset."""
    inputs = bench_inputs(checkpoint, dataset, root, categories, shots, seeds)
    rows: dict[str, list[Scored]] = {}
    for category in inputs.categories:
        rows.update(score_category(inputs.detector, category, inputs.size, shifted))
    return rows


def run_fusion_bench(
    checkpoint: Path, dataset: str, root: Path, categories: list[str] | None, shots: int, seeds: int, shifted: bool
) -> str:
    rows = score_rows(checkpoint, dataset, root, categories, shots, seeds, shifted)
    return render({name: evaluate(scored, CANDIDATES) for name, scored in rows.items()}, [PATCH_ONLY, *CANDIDATES])
