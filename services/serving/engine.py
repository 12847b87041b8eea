"""Mixed-domain inference: one backbone call for the whole batch, then per-domain scoring.

The backbone forward (the costly part) does not depend on the domain, so frames of every domain share
it; only the nearest-patch search, the text prototypes and the fusion use the domain's bank. Scores do
not depend on what else is in the batch (tested).
"""
from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np
import torch

from model import InCTRLv2, InvalidImageError
from model.preprocess import restore_geometry
from services.inspection import InspectionOutcome, Rejected, Scored
from services.messages import DeadLetterReason
from services.registry import DomainRecord, RegistryError, UnknownDomainError
from services.serving.bank_cache import BankCache
from services.serving.image_batch import to_backbone_geometry

logger = logging.getLogger(__name__)

ThresholdPolicy = Callable[[DomainRecord], float]


@dataclass(frozen=True)
class FrameInput:
    """One frame to score: its domain and its image (3, H, W) float32 in [0, 1]."""

    domain: str
    image: np.ndarray


class InspectionEngine:
    """Scores frames of any domains with one detector and a bank cache."""

    def __init__(self, detector: InCTRLv2, banks: BankCache, threshold_for: ThresholdPolicy, model_version: str) -> None:
        self.detector = detector
        self.banks = banks
        self._threshold_for = threshold_for
        self.model_version = model_version

    def inspect(self, frames: Sequence[FrameInput]) -> list[InspectionOutcome]:
        """One outcome per frame, in order; a bad frame or unknown domain fails alone, never the batch."""
        outcomes: list[InspectionOutcome | None] = [None] * len(frames)
        size = self.detector.backbone.image_size
        ready: list[tuple[int, torch.Tensor]] = []
        for i, frame in enumerate(frames):
            try:
                ready.append((i, to_backbone_geometry(frame.image, size, f"frame {i} of domain {frame.domain!r}")))
            except InvalidImageError as error:
                outcomes[i] = Rejected(DeadLetterReason.INFERENCE_ERROR, str(error))
        groups: dict[str, list[int]] = defaultdict(list)
        for position, (i, _) in enumerate(ready):
            groups[frames[i].domain].append(position)
        domains = {}
        for domain in list(groups):
            try:
                domains[domain] = self.banks.get(domain)
            except UnknownDomainError as error:
                for position in groups.pop(domain):
                    outcomes[ready[position][0]] = Rejected(DeadLetterReason.UNKNOWN_DOMAIN, str(error))
            except RegistryError as error:
                for position in groups.pop(domain):
                    outcomes[ready[position][0]] = Rejected(DeadLetterReason.INFERENCE_ERROR, str(error))
        if groups:
            kept = sorted(position for positions in groups.values() for position in positions)
            row = {position: r for r, position in enumerate(kept)}
            embedding, patches = self.detector.encode(torch.stack([ready[p][1] for p in kept]))
            for domain, positions in groups.items():
                rows = torch.tensor([row[p] for p in positions], device=embedding.device)
                registered = domains[domain]
                detection = self.detector.score(embedding[rows], patches[rows], registered.bank, (size, size))
                threshold = self._threshold_for(registered.record)
                for k, position in enumerate(positions):
                    i = ready[position][0]
                    height, width = frames[i].image.shape[-2:]
                    anomaly_map = restore_geometry(detection.maps[k : k + 1], height, width)[0]
                    outcomes[i] = Scored(
                        score=float(detection.scores[k]),
                        anomaly_map=anomaly_map.float().cpu().numpy(),
                        threshold=threshold,
                        model_version=self.model_version,
                        reference_version=registered.record.reference_version,
                    )
        logger.debug("batch scored", extra={"frames": len(frames), "domains": len(groups)})
        missing = [i for i, outcome in enumerate(outcomes) if outcome is None]
        if missing:
            raise RuntimeError(f"frames {missing} got no outcome")
        return cast(list[InspectionOutcome], outcomes)
