"""Wire format of POST /v1/inspect/batch, shared by the ingress and HttpInspectionClient.

Request: multipart/form-data with one `manifest` part (BatchManifest JSON) and one `images` part per frame,
in the manifest's order. A part is either the frame's pixels at the backbone's geometry, raw little-endian
float16 (3, S, S) as prepare_frame makes them (the manifest entry then gives the frame's `original_size`;
the Kafka consumer sends these: it has decoded the frame already, and S comes from GET /v1/model), or an
encoded image file (PNG, JPEG...) from any other client, which the ingress decodes and prepares once.

Response: BatchInspectionResponse, one FrameOutcome per frame in the same order. A map travels at model
resolution (S, S) as raw little-endian float16, base64 (S = 240: 115 kB), with the frame's original size:
the client restores it to the frame (geometry.restore_map) and quantises it once, for its map.png.
"""
from __future__ import annotations

import base64
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.protocol.outcomes import InspectionOutcome, Rejected, Retryable, Scored
from services.protocol.messages import NAME_PATTERN, DeadLetterReason

BATCH_ROUTE = "/v1/inspect/batch"
MODEL_ROUTE = "/v1/model"
MANIFEST_PART = "manifest"
IMAGES_PART = "images"


class BatchFrame(BaseModel):
    """Where one image of the batch comes from; only the domain affects scoring."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    domain: str = Field(pattern=NAME_PATTERN)
    line: str = Field(pattern=NAME_PATTERN)
    frame_id: str = Field(pattern=NAME_PATTERN)
    original_size: tuple[int, int] | None = Field(
        None, description="(height, width) of the frame when its part holds prepared float16 pixels; absent for an image file."
    )


class ModelInfo(BaseModel):
    """GET /v1/model: what a client must send, pixels (3, S, S) with S = input_size, and for which backbone."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input_size: int = Field(gt=0)
    backbone: str


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
    map_shape: tuple[int, int] | None = Field(None, description="(height, width) of the map: the model's resolution.")
    map_f16: str | None = Field(None, description="base64 of the map as float16 little-endian values in [0, 1].")
    original_size: tuple[int, int] | None = Field(None, description="(height, width) of the frame the map belongs to.")
    error: FrameError | None = None

    @model_validator(mode="after")
    def _score_or_error(self) -> FrameOutcome:
        scored = None not in (self.score, self.threshold, self.map_shape, self.map_f16)
        if scored == (self.error is not None):
            raise ValueError(f"frame {self.frame_id}: an outcome has either score, threshold and map, or an error")
        return self

    @classmethod
    def from_outcome(cls, frame_id: str, outcome: InspectionOutcome, original_size: tuple[int, int] | None = None) -> FrameOutcome:
        """Encode an engine outcome for the wire (the receiving writer validates score and map)."""
        if isinstance(outcome, Rejected):
            return cls(frame_id=frame_id, error=FrameError(code=outcome.reason.value, detail=outcome.detail))
        if isinstance(outcome, Retryable):
            return cls(frame_id=frame_id, error=FrameError(code="retryable", detail=outcome.detail))
        values = np.asarray(outcome.anomaly_map, dtype="<f2")
        if values.ndim != 2:
            return cls(frame_id=frame_id, error=FrameError(code="inference_error", detail=f"map of shape {values.shape}"))
        return cls(
            frame_id=frame_id,
            score=outcome.score,
            threshold=outcome.threshold,
            map_threshold=outcome.map_threshold,
            map_range=outcome.map_range,
            model_version=outcome.model_version,
            reference_version=outcome.reference_version,
            map_shape=(int(values.shape[0]), int(values.shape[1])),
            map_f16=base64.b64encode(values.tobytes()).decode(),
            original_size=original_size,
        )

    def to_outcome(self) -> InspectionOutcome:
        """Decode into what the consumer writes; raises ValueError when the map does not fit its shape."""
        if self.error is not None:
            if self.error.code == "retryable":
                return Retryable(self.error.detail)
            return Rejected(DeadLetterReason(self.error.code), self.error.detail)
        height, width = self.map_shape  # type: ignore[misc]
        raw = base64.b64decode(self.map_f16 or "", validate=True)
        if len(raw) != 2 * height * width:
            raise ValueError(f"frame {self.frame_id}: map has {len(raw)} bytes, expected {2 * height * width} for {height}x{width}")
        return Scored(
            score=float(self.score),  # type: ignore[arg-type]
            anomaly_map=np.frombuffer(raw, dtype="<f2").reshape(height, width),
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


def pixels_part(pixels: np.ndarray) -> bytes:
    """A prepared frame's `images` part: its (3, S, S) float16 pixels, raw little-endian."""
    return np.ascontiguousarray(pixels, dtype="<f2").tobytes()


def pixels_from_part(data: bytes, size: int, what: str) -> np.ndarray:
    """Inverse of pixels_part for a service of input size S; ValueError naming `what` when the length is wrong."""
    expected = 3 * size * size * 2
    if len(data) != expected:
        raise ValueError(f"{what}: {len(data)} bytes of pixels, expected {expected} for (3, {size}, {size}) float16")
    return np.frombuffer(data, dtype="<f2").reshape(3, size, size).astype(np.float16)
