"""`inctrl bench views --components`: where each kind of calibration view puts each fused component (dev only).

Calibration's nuisance views stand in for the frames a line will send (model/calibration.py): their fused
scores join the references' leave-one-out scores under the image threshold. A view kind that moves a
component much further than real normal frames do raises the threshold (recall lost), and one that moves it
less lowers it (false alarms). Per category and prompt draw this prints, for every standardised component
(model/standardisation.py), the z-score z_c = (c - mean) / spread against the bank's own leave-one-out values
(the fusion's input) of:
- the category's normal test frames against the full bank;
- each reference held out against the other K - 1;
- each view kind alone (exposure, shift, illumination gradient) and as calibration draws them, each view
  against the bank of the references other than its own.
Cells: mean / 95th percentile of z over draws.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from inctrl.dev.bench_inputs import CategoryInputs, bench_inputs, encode_samples
from model import InCTRLv2
from model.bank import PromptBank
from model.calibration import CALIBRATION_VIEWS
from model.nuisance import NuisanceViews, views_per_reference
from model.standardisation import COMPONENTS, standardise
from pipelines.datasets.sample import NORMAL

NORMAL_FRAMES = "normal frames"
HELD_OUT = "references, held out"
VIEW_KINDS: dict[str, NuisanceViews] = {
    "views: exposure only": CALIBRATION_VIEWS.model_copy(update={"shift": 0.0, "gradient": 0.0}),
    "views: shift only": CALIBRATION_VIEWS.model_copy(update={"gain": 0.0, "gradient": 0.0}),
    "views: gradient only": CALIBRATION_VIEWS.model_copy(update={"gain": 0.0, "shift": 0.0}),
    "views: as calibrated": CALIBRATION_VIEWS,
}
SOURCES = (NORMAL_FRAMES, HELD_OUT, *VIEW_KINDS)


@torch.inference_mode()
def component_z(detector: InCTRLv2, embedding: torch.Tensor, patches: torch.Tensor, bank: PromptBank) -> dict[str, np.ndarray]:
    """Each standardised component of encoded queries, as z against ``bank``'s leave-one-out values (K >= 2)."""
    outputs = detector.head_outputs(embedding, patches, bank)
    components = detector.components(outputs, embedding, patches, bank)
    references = detector.reference_components(bank)
    if references is None:
        raise ValueError(f"component z-scores need a bank of K >= 2 references, {bank.class_name!r} has {bank.shots}")
    floor = detector.config.fusion.floor
    return {name: standardise(value, references[name], floor).cpu().numpy() for name, value in components.items()}


@torch.inference_mode()
def category_z(detector: InCTRLv2, inputs: CategoryInputs, size: int) -> dict[str, dict[str, np.ndarray]]:
    """source (SOURCES) -> component -> every z of that source over the category's prompt draws (K >= 3: a
    held-out reference and its views are z-scored against the K - 1 others' leave-one-out values)."""
    normals = [s for s in inputs.test if s.label == NORMAL]
    embedding, patches = encode_samples(detector, normals, size)
    found: dict[str, dict[str, list[np.ndarray]]] = {source: {} for source in SOURCES}

    def add(source: str, values: Mapping[str, np.ndarray]) -> None:
        for name, z in values.items():
            found[source].setdefault(name, []).append(z)

    for draw in inputs.prompts:
        references = inputs.references(draw, size).to(detector.device)
        singles = [references[i : i + 1] for i in range(len(references))]
        ref_embedding, ref_patches = detector.encode(references)
        bank = detector.bank_from_features(ref_embedding, ref_patches, inputs.class_name, detector.exposure_views(singles))
        others = [bank.subset([j for j in range(len(singles)) if j != i]) for i in range(len(singles))]
        add(NORMAL_FRAMES, component_z(detector, embedding, patches, bank))
        for i, other in enumerate(others):
            add(HELD_OUT, component_z(detector, ref_embedding[i : i + 1], ref_patches[i : i + 1], other))
        for kind, views in VIEW_KINDS.items():
            for i, _, drawn in views_per_reference(singles, views):
                add(kind, component_z(detector, *detector.encode(drawn), others[i]))
    return {source: {name: np.concatenate(zs) for name, zs in values.items()} for source, values in found.items()}


def render_z(results: Mapping[str, Mapping[str, Mapping[str, np.ndarray]]]) -> str:
    """One markdown table: a row per category and source, a column per component (mean / p95 of z)."""
    names = [n for n in COMPONENTS if any(n in by_source[NORMAL_FRAMES] for by_source in results.values())]
    lines = ["| category | source | " + " | ".join(f"z {n}" for n in names) + " |", "|---|---|" + "---|" * len(names)]
    for category, by_source in results.items():
        for source, values in by_source.items():
            cells = [f"{np.mean(values[n]):+.2f} / {np.percentile(values[n], 95):+.2f}" for n in names]
            lines.append(f"| {category} | {source} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_view_components(checkpoint: Path, dataset: str, root: Path, categories: list[str] | None, shots: int, seeds: int) -> str:
    inputs = bench_inputs(checkpoint, dataset, root, categories, shots, seeds)
    return render_z({c.category: category_z(inputs.detector, c, inputs.size) for c in inputs.categories})
