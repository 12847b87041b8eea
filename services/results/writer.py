"""One inspected frame's objects: encode (map.png, overlay.jpg, the result event), then store them.

Shared by the Kafka consumer and the HTTP path, so a frame inspected either way leaves the same objects.
The map arrives at model resolution; it is restored to the frame's size, validated and quantised once here.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from services.imaging.decoding import image_suffix
from services.imaging.geometry import restore_map
from services.protocol.messages import InspectionRequest, InspectionResult, verdict_for
from services.protocol.outcomes import Scored
from services.results.encoding import encode_levels_png, quantise_map, render_overlay_jpeg
from services.results.keys import input_key, result_keys
from services.results.map_regions import map_statistics
from services.storage.object_store import ObjectStore


class InvalidOutcomeError(ValueError):
    """The detector returned a score or map that cannot be published."""


@dataclass(frozen=True)
class EncodedResult:
    """Everything one frame leaves, encoded: written by store_result, result.json last."""

    result: InspectionResult
    map_png: bytes
    overlay_jpg: bytes
    original: bytes | None


def encode_result(
    request: InspectionRequest,
    image: np.ndarray,
    outcome: Scored,
    bucket: str,
    overlay_quality: int = 85,
    input_digest: str | None = None,
    original: bytes | None = None,
    images: bool = True,
) -> EncodedResult:
    """Restore the map to the (3, H, W) image, validate and quantise it once, encode PNG and overlay and
    build the event; InvalidOutcomeError for a score or map that cannot be published (nothing is written).

    `original`, the image file as received, is kept as input{suffix} next to them, so an operator can
    review the frame and teach the domain from it (the console's "mark normal"). Without `images` only the
    event is built (an HTTP inspection that stores nothing)."""
    if not math.isfinite(outcome.score) or not 0.0 <= outcome.score <= 1.0:
        raise InvalidOutcomeError(f"score must be a finite number in [0, 1], got {outcome.score}")
    height, width = image.shape[-2:]
    try:
        anomaly_map = restore_map(outcome.anomaly_map, height, width)
        levels = quantise_map(anomaly_map)
    except ValueError as error:
        raise InvalidOutcomeError(str(error)) from error
    map_threshold = outcome.threshold if outcome.map_threshold is None else outcome.map_threshold
    statistics = map_statistics(anomaly_map, float(map_threshold), outcome.map_range)
    overlay_jpg = render_overlay_jpeg(
        image, anomaly_map, quality=overlay_quality, value_range=outcome.map_range or (0.0, 1.0),
        outline_threshold=outcome.map_threshold,  # an outline only where the domain has a calibrated pixel threshold
    ) if images else b""  # fmt: skip
    keys = result_keys(request.domain, request.line, request.timestamp, request.frame_id)
    score, threshold = float(outcome.score), float(outcome.threshold)
    result = InspectionResult(
        frame_id=request.frame_id,
        domain=request.domain,
        line=request.line,
        timestamp=request.timestamp,
        score=score,
        threshold=threshold,
        verdict=verdict_for(score, threshold),
        bucket=bucket,
        result_key=keys.result,
        map_key=keys.map,
        overlay_key=keys.overlay,
        model_version=outcome.model_version,
        reference_version=outcome.reference_version,
        latency_ms=0.0,
        map_statistics=statistics,
        input_digest=input_digest,
    )
    return EncodedResult(result, encode_levels_png(levels) if images else b"", overlay_jpg, original)


def store_result(encoded: EncodedResult, store: ObjectStore | None, started: float) -> InspectionResult:
    """Map, overlay (and the original), then result.json last: its presence means the frame's objects are
    complete. The event's latency runs from `started` (monotonic) to here. Without a store, only the event."""
    result = encoded.result
    if store is not None:
        store.put_bytes(result.bucket, result.map_key, encoded.map_png, content_type="image/png")
        store.put_bytes(result.bucket, result.overlay_key, encoded.overlay_jpg, content_type="image/jpeg")
        if encoded.original is not None:
            store.put_bytes(result.bucket, input_key(result.result_key, image_suffix(encoded.original)), encoded.original)
    result = result.model_copy(update={"latency_ms": 1000.0 * (time.monotonic() - started)})
    if store is not None:
        store.put_json(result.bucket, result.result_key, result)
    return result


def write_result(
    request: InspectionRequest,
    image: np.ndarray,
    outcome: Scored,
    started: float,
    bucket: str,
    store: ObjectStore | None,
    overlay_quality: int = 85,
    input_digest: str | None = None,
    original: bytes | None = None,
) -> InspectionResult:
    """encode_result then store_result."""
    encoded = encode_result(request, image, outcome, bucket, overlay_quality, input_digest, original, images=store is not None)
    return store_result(encoded, store, started)
