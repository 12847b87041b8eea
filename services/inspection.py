"""What the streaming layer hands the detector and what it gets back, independent of how it is served."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from services.messages import DeadLetterReason, InspectionRequest

_INSPECTION_FAILURES = {DeadLetterReason.INFERENCE_ERROR, DeadLetterReason.UNKNOWN_DOMAIN}


class InspectionUnavailable(RuntimeError):
    """The inspection service could not be reached: the batch must be replayed, not dead-lettered."""


@dataclass(frozen=True)
class DecodedFrame:
    """A validated request with its image decoded to float32 (3, H, W) in [0, 1].

    `encoded` holds the image file bytes as received (inline or fetched by URI), so a remote detector can
    be sent the compact file instead of the pixels.
    """

    request: InspectionRequest
    image: np.ndarray
    encoded: bytes | None = None


@dataclass(frozen=True)
class InspectionOutcome:
    """What the detector says about one frame: a score and map, or why it could not score it."""

    score: float | None = None
    anomaly_map: np.ndarray | None = None
    threshold: float | None = None
    model_version: str = ""
    reference_version: str = ""
    map_threshold: float | None = None
    error: DeadLetterReason | None = None
    detail: str = ""

    @classmethod
    def success(
        cls,
        score: float,
        anomaly_map: np.ndarray,
        threshold: float,
        model_version: str,
        reference_version: str,
        map_threshold: float | None = None,
    ) -> InspectionOutcome:
        """A scored frame; map_threshold (pixel level) defaults to the image threshold."""
        return cls(score, anomaly_map, threshold, model_version, reference_version, map_threshold)

    @classmethod
    def failure(cls, reason: DeadLetterReason, detail: str) -> InspectionOutcome:
        """A frame the detector refused: reason is inference_error or unknown_domain."""
        if reason not in _INSPECTION_FAILURES:
            raise ValueError(f"an inspection can only fail with {sorted(_INSPECTION_FAILURES)}, not {reason}")
        return cls(error=reason, detail=detail)


InspectFn = Callable[[Sequence[DecodedFrame]], Sequence[InspectionOutcome]]
