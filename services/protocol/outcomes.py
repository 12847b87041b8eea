"""What the streaming layer hands the detector and what it gets back, independent of how it is served.

An inspection of one frame ends in exactly one of three outcomes (DESIGN.md, failure taxonomy):

    Scored     a score and a map: the frame gets a result
    Rejected   the frame's (or its domain's) fault: final, dead-lettered with the reason
    Retryable  infrastructure trouble for this frame only (a replica died, a timeout, overload): nobody's
               input fault; the consumer tries again and dead-letters it alone only after its attempt limit

InspectionUnavailable, raised instead of returning outcomes, means the whole call could not reach the
service: nothing of the batch is committed and it is replayed.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from services.protocol.messages import DeadLetterReason, InspectionRequest

_INSPECTION_REJECTIONS = {DeadLetterReason.INFERENCE_ERROR, DeadLetterReason.UNKNOWN_DOMAIN}


class InspectionUnavailable(RuntimeError):
    """The inspection service could not be reached: the batch must be replayed, not dead-lettered."""


@dataclass(frozen=True)
class DecodedFrame:
    """A validated request with its image decoded to float32 (3, H, W) in [0, 1], decoded once.

    `encoded` holds the image file bytes as received (inline or fetched by URI: kept as input.png and
    hashed for duplicate detection); `pixels` what a replica is sent, the image at the backbone's geometry
    (services.imaging.geometry.prepare_frame), set by the consumer once it knows the service's input size.
    """

    request: InspectionRequest
    image: np.ndarray
    encoded: bytes | None = None
    pixels: np.ndarray | None = None


@dataclass(frozen=True)
class FrameInput:
    """One frame for a detector replica: its domain and its pixels at the backbone's geometry,
    (3, S, S) float16 in [0, 1] (prepare_frame). Replicas do device work only: no decoding, no resampling."""

    domain: str
    pixels: np.ndarray


@dataclass(frozen=True)
class Scored:
    """A scored frame. `anomaly_map` is (S, S) at model resolution as a replica returns it (float16), or
    already at the frame's size; the result writer restores it to the frame (geometry.restore_map).
    map_threshold (pixel level) defaults to the image threshold, map_range (the domain's calibrated colour
    scale of the overlay, low and high) to (0, 1)."""

    score: float
    anomaly_map: np.ndarray
    threshold: float
    model_version: str
    reference_version: str
    map_threshold: float | None = None
    map_range: tuple[float, float] | None = None


@dataclass(frozen=True)
class Rejected:
    """A frame the detector refused for a reason of its own (bad image, unknown or broken domain): final."""

    reason: DeadLetterReason
    detail: str

    def __post_init__(self) -> None:
        if self.reason not in _INSPECTION_REJECTIONS:
            raise ValueError(f"an inspection can only be rejected with {sorted(_INSPECTION_REJECTIONS)}, not {self.reason}")


@dataclass(frozen=True)
class Retryable:
    """The frame could not be scored this time for a reason that is not its own; try it again."""

    detail: str


InspectionOutcome = Scored | Rejected | Retryable
InspectFn = Callable[[Sequence[DecodedFrame]], Sequence[InspectionOutcome]]
"""What the consumer calls. A remote service's client also has `input_size() -> int` (the backbone's S: the
consumer then sends prepared pixels, DecodedFrame.pixels) and `reachable() -> bool` (its health probe)."""
