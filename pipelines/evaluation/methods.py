"""The methods one evaluation compares, all from ONE pass of the heads over the same prompts.

- inctrlv2: the trained detector, s(x) (Eq 9) and M'(x) (Eq 17).
- patch-nn: training-free nearest-neighbour baseline, max M_x and the upsampled M_x map (no blur).
- zero-shot-text: training-free s_q (Eq 6); image level only, and only with a text tower.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from model import InCTRLv2, PromptBank
from model.fusion import upsample
from model.preprocess import restore_geometry

INCTRL = "inctrlv2"
PATCH_NN = "patch-nn"
ZERO_SHOT_TEXT = "zero-shot-text"
ALL_METHODS = (INCTRL, PATCH_NN, ZERO_SHOT_TEXT)


@dataclass
class MethodOutput:
    scores: torch.Tensor  # (B,)
    maps: torch.Tensor | None  # (B, H, W) at the input resolution; None for image-level-only methods


def available_methods(detector: InCTRLv2, trained: bool) -> tuple[list[str], list[str]]:
    """Methods this detector can be evaluated with, and notes on the ones left out."""
    methods, notes = [PATCH_NN], []
    if trained:
        methods.insert(0, INCTRL)
    else:
        notes.append("no checkpoint: only the training-free baselines are evaluated")
    if detector.backbone.has_text:
        methods.append(ZERO_SHOT_TEXT)
    else:
        notes.append(
            f"{detector.backbone.name} has no text tower: zero-shot-text is skipped, and InCTRLv2 runs with fixed "
            "orthogonal stand-ins for the text prototypes and without s_q (not the paper's CLIP method)"
        )
    return methods, notes


@torch.inference_mode()
def score_methods(
    detector: InCTRLv2,
    embedding: torch.Tensor,
    patches: torch.Tensor,
    bank: PromptBank,
    size: tuple[int, int],
    methods: list[str],
) -> dict[str, MethodOutput]:
    """Every requested method's scores (and maps) for one batch of encoded images of one domain."""
    outputs = detector.head_outputs(embedding.to(detector.device), patches.to(detector.device), bank)
    results: dict[str, MethodOutput] = {}
    if INCTRL in methods:
        scores, maps = detector.fuse(outputs, embedding.to(detector.device), patches.to(detector.device), bank)
        results[INCTRL] = MethodOutput(scores.cpu(), restore_geometry(maps, *size).cpu())
    if PATCH_NN in methods:
        residual = outputs.patch_residual
        maps = upsample(residual, detector.backbone.grid, detector.backbone.image_size)
        results[PATCH_NN] = MethodOutput(residual.amax(dim=-1).cpu(), restore_geometry(maps, *size).cpu())
    if ZERO_SHOT_TEXT in methods and outputs.text_score is not None:
        results[ZERO_SHOT_TEXT] = MethodOutput(outputs.text_score.cpu(), None)
    return results
