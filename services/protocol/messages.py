"""Versioned message schemas on the Kafka topics: frames in, results and dead letters out."""

from __future__ import annotations

import base64
from datetime import datetime, timezone
from enum import StrEnum
from typing import Annotated, Literal, Self

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, PlainSerializer, model_validator

SCHEMA_VERSION = 1

# Names end up in S3 keys and topic keys: keep them to a safe, unambiguous alphabet.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
S3_URI_PATTERN = r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/.+$"

# Raw bytes in Python; standard base64 in JSON (decoding also accepts the URL-safe alphabet).
WireBytes = Annotated[
    bytes, PlainSerializer(lambda value: base64.b64encode(value).decode("ascii"), return_type=str, when_used="json")
]


class Verdict(StrEnum):
    """Decision for a frame against its domain's threshold."""

    ANOMALOUS = "anomalous"
    NORMAL = "normal"


class DeadLetterReason(StrEnum):
    """Why a frame message could not be turned into a result."""

    UNDECODABLE_IMAGE = "undecodable_image"
    UNKNOWN_DOMAIN = "unknown_domain"
    SCHEMA_VIOLATION = "schema_violation"
    # The message itself is above the size limit.
    OVERSIZE = "oversize"
    INFERENCE_ERROR = "inference_error"
    # The image (or the object it is read from) is above a pixel, side, decoded-size or object-size limit.
    IMAGE_TOO_LARGE = "image_too_large"
    # image_uri names a location outside the configured buckets/prefixes, or is not a usable S3 URI.
    FORBIDDEN_REFERENCE = "forbidden_reference"
    # The timestamp cannot be placed on a UTC calendar day (it is needed for the result keys).
    INVALID_TIMESTAMP = "invalid_timestamp"
    # Another frame with the same id (and a different image) already has a result at the same keys.
    DUPLICATE_FRAME = "duplicate_frame"
    # The frame failed alone for infrastructure reasons more often than the consumer's attempt limit.
    RETRIES_EXHAUSTED = "retries_exhausted"
    # Last line of defence: handling the record raised something unforeseen; the detail names the type.
    INTERNAL_ERROR = "internal_error"


def verdict_for(score: float, threshold: float) -> Verdict:
    """A score at or above the threshold is anomalous."""
    return Verdict.ANOMALOUS if score >= threshold else Verdict.NORMAL


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, val_json_bytes="base64")

    def to_bytes(self) -> bytes:
        """UTF-8 JSON, the wire format of every topic."""
        return self.model_dump_json().encode()

    @classmethod
    def from_bytes(cls, payload: WireBytes) -> Self:
        """Parse and validate a wire payload; raises pydantic.ValidationError on any violation."""
        return cls.model_validate_json(payload)


class InspectionRequest(_Message):
    """One camera frame to inspect: the image travels inline (base64) or by S3 reference, never both."""

    schema_version: Literal[1] = SCHEMA_VERSION
    frame_id: str = Field(pattern=NAME_PATTERN, description="Unique id of the frame; part of the result keys.")
    domain: str = Field(pattern=NAME_PATTERN, description="Product domain whose references score the frame.")
    line: str = Field(pattern=NAME_PATTERN, description="Production line the frame comes from.")
    timestamp: AwareDatetime = Field(description="Capture time, timezone-aware.")
    image: WireBytes | None = Field(None, description="Encoded image file bytes (PNG, JPEG...), base64 on the wire.")
    image_uri: str | None = Field(None, pattern=S3_URI_PATTERN, description="s3://bucket/key of the image file.")

    @model_validator(mode="after")
    def _exactly_one_image_source(self) -> InspectionRequest:
        if (self.image is None) == (self.image_uri is None):
            raise ValueError("exactly one of 'image' (inline base64) and 'image_uri' (s3://bucket/key) is required")
        if self.image is not None and len(self.image) == 0:
            raise ValueError("'image' is empty")
        return self


class DefectBox(BaseModel):
    """Bounding box of one 8-connected region of map pixels >= the pixel threshold, in image pixels."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    x_min: int = Field(ge=0, description="Left column, inclusive.")
    y_min: int = Field(ge=0, description="Top row, inclusive.")
    x_max: int = Field(ge=0, description="Right column, inclusive.")
    y_max: int = Field(ge=0, description="Bottom row, inclusive.")
    area: int = Field(ge=1, description="Pixels of the region.")
    peak: float = Field(ge=0.0, le=1.0, description="Highest map value inside the region.")


class MapStatistics(BaseModel):
    """Summary of a pixel anomaly map, so consumers of events need not fetch the PNG."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max: float = Field(ge=0.0, le=1.0)
    mean: float = Field(ge=0.0, le=1.0)
    threshold: float = Field(description="Pixel threshold used for area_above_threshold.")
    area_above_threshold: float = Field(ge=0.0, le=1.0, description="Fraction of pixels >= threshold.")
    regions: int = Field(0, ge=0, description="8-connected regions of pixels >= threshold.")
    boxes: list[DefectBox] = Field(default_factory=list, description="Their boxes, highest peak first (at most 16).")
    display_range: tuple[float, float] | None = Field(None, description="The overlay's colour scale (low, high).")


class InspectionResult(_Message):
    """Outcome of one frame, published on the results topic and stored as result.json."""

    schema_version: Literal[1] = SCHEMA_VERSION
    frame_id: str = Field(pattern=NAME_PATTERN)
    domain: str = Field(pattern=NAME_PATTERN)
    line: str = Field(pattern=NAME_PATTERN)
    timestamp: AwareDatetime
    score: float = Field(ge=0.0, le=1.0, description="Image anomaly score s(x).")
    threshold: float = Field(description="The domain's image threshold the verdict was taken against.")
    verdict: Verdict
    bucket: str = Field(description="Bucket holding the three result objects.")
    result_key: str
    map_key: str
    overlay_key: str
    model_version: str
    reference_version: str
    latency_ms: float = Field(ge=0.0, description="Time from poll to stored result inside the consumer.")
    map_statistics: MapStatistics
    input_digest: str | None = Field(
        None,
        pattern=r"^[0-9a-f]{64}$",
        description="SHA-256 of the image file scored: tells a replay of the same frame from another frame "
        "that reuses its id.",
    )

    @model_validator(mode="after")
    def _verdict_matches_score(self) -> InspectionResult:
        if self.verdict != verdict_for(self.score, self.threshold):
            raise ValueError(f"verdict {self.verdict} contradicts score {self.score} and threshold {self.threshold}")
        return self


class DeadLetter(_Message):
    """A frame message that produced no result, with the reason and where it came from."""

    schema_version: Literal[1] = SCHEMA_VERSION
    reason: DeadLetterReason
    detail: str
    topic: str
    partition: int
    offset: int
    key: str | None = Field(None, description="The original record's key (its first characters when it is long).")
    payload: WireBytes = Field(
        description="The original message bytes; only their first bytes when payload_truncated (then payload_uri "
        "names the stored original)."
    )
    payload_size: int = Field(ge=0, description="Length of the original message in bytes.")
    payload_truncated: bool
    payload_uri: str | None = Field(
        None, description="s3:// URI of the StoredOriginal (key and value) when they do not fit in this record."
    )
    frame_id: str | None = Field(None, description="Frame id when the message was parseable enough to tell.")
    failed_at: AwareDatetime = Field(default_factory=lambda: datetime.now(timezone.utc))

    @model_validator(mode="after")
    def _original_recoverable(self) -> DeadLetter:
        if self.payload_truncated and self.payload_uri is None:
            raise ValueError("a dead letter with a truncated payload needs the payload_uri of the stored original")
        return self


class StoredOriginal(_Message):
    """A dead-lettered record kept whole in the object store, for replay: its key and value as received."""

    schema_version: Literal[1] = SCHEMA_VERSION
    topic: str
    partition: int
    offset: int
    key: WireBytes | None = None
    value: WireBytes
