"""Wire format of POST /v1/inspect/batch, shared by the ingress and HttpInspectionClient.

Request: multipart/form-data with one `manifest` part (BatchManifest JSON) and one `images` part per frame,
in the manifest's order, each holding the encoded image file as received (PNG, JPEG...). Encoded images
are far smaller than decoded pixels, and the ingress decodes them exactly as the consumer did.

Response: BatchInspectionResponse, one FrameOutcome per frame in the same order. A map travels as its
16-bit levels (the quantisation map.png stores), raw little-endian uint16, base64: no compression cost,
precision 1/131070, and the consumer's map.png is bit-identical to one written from the float map.
"""
from __future__ import annotations

import base64
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.protocol.outcomes import InspectionOutcome, Rejected, Retryable, Scored
from services.protocol.messages import NAME_PATTERN, DeadLetterReason
from services.results.encoding import dequantise_map, quantise_map
from services.results.writer import InvalidOutcomeError, checked_map

BATCH_ROUTE = "/v1/inspect/batch"
MANIFEST_PART = "manifest"
IMAGES_PART = "images"


class BatchFrame(BaseModel):
    """Where one image of the batch comes from; only the domain affects scoring."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    domain: str = Field(pattern=NAME_PATTERN)
    line: str = Field(pattern=NAME_PATTERN)
    frame_id: str = Field(pattern=NAME_PATTERN)


class BatchManifest(BaseModel):
    """The `manifest` part: one entry per `images` part, in order."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    frames: list[BatchFrame] = Field(min_length=1)


class FrameError(BaseModel):
    """Why one frame got no score."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    code: Literal["unknown_domain", "inference_error", "retryable"]
    detail: str


class FrameOutcome(BaseModel):
    """One frame's answer: a score with its map, or an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    frame_id: str
    score: float | None = None
    threshold: float | None = None
    map_threshold: float | None = None
    map_range: tuple[float, float] | None = None
    model_version: str = ""
    reference_version: str = ""
    map_shape: tuple[int, int] | None = Field(None, description="(height, width) of the map: the image size.")
    map_levels: str | None = Field(None, description="base64 of the map as uint16 little-endian levels / 65535.")
    error: FrameError | None = None

    @model_validator(mode="after")
    def _score_or_error(self) -> FrameOutcome:
        scored = None not in (self.score, self.threshold, self.map_shape, self.map_levels)
        if scored == (self.error is not None):
            raise ValueError(f"frame {self.frame_id}: an outcome has either score, threshold and map, or an error")
        return self

    @classmethod
    def from_outcome(cls, frame_id: str, outcome: InspectionOutcome) -> FrameOutcome:
        """Encode an engine outcome for the wire; an unpublishable score or map becomes an inference_error."""
        if isinstance(outcome, Rejected):
            return cls(frame_id=frame_id, error=FrameError(code=outcome.reason.value, detail=outcome.detail))
        if isinstance(outcome, Retryable):
            return cls(frame_id=frame_id, error=FrameError(code="retryable", detail=outcome.detail))
        try:
            anomaly_map, _ = checked_map(outcome)
        except InvalidOutcomeError as error:
            return cls(frame_id=frame_id, error=FrameError(code="inference_error", detail=f"invalid outcome: {error}"))
        levels = quantise_map(anomaly_map)
        return cls(
            frame_id=frame_id,
            score=outcome.score,
            threshold=outcome.threshold,
            map_threshold=outcome.map_threshold,
            map_range=outcome.map_range,
            model_version=outcome.model_version,
            reference_version=outcome.reference_version,
            map_shape=(int(levels.shape[0]), int(levels.shape[1])),
            map_levels=base64.b64encode(levels.astype("<u2").tobytes()).decode(),
        )

    def to_outcome(self) -> InspectionOutcome:
        """Decode into what the consumer writes; raises ValueError when the map does not fit its shape."""
        if self.error is not None:
            if self.error.code == "retryable":
                return Retryable(self.error.detail)
            return Rejected(DeadLetterReason(self.error.code), self.error.detail)
        height, width = self.map_shape  # type: ignore[misc]
        raw = base64.b64decode(self.map_levels or "", validate=True)
        if len(raw) != 2 * height * width:
            raise ValueError(f"frame {self.frame_id}: map has {len(raw)} bytes, expected {2 * height * width} for {height}x{width}")
        levels = np.frombuffer(raw, dtype="<u2").reshape(height, width)
        return Scored(
            score=float(self.score),  # type: ignore[arg-type]
            anomaly_map=dequantise_map(levels),
            threshold=float(self.threshold),  # type: ignore[arg-type]
            model_version=self.model_version,
            reference_version=self.reference_version,
            map_threshold=self.map_threshold,
            map_range=self.map_range,
        )


class BatchInspectionResponse(BaseModel):
    """Body of a 200 answer to POST /v1/inspect/batch."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    outcomes: list[FrameOutcome]
