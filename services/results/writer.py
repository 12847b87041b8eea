"""Write one inspected frame's objects (map.png, overlay.jpg, then result.json) and build its result event.

Shared by the Kafka consumer and the HTTP path, so a frame inspected either way leaves the same objects.
"""
from __future__ import annotations

import math
import time

import numpy as np

from services.imaging.decoding import image_suffix
from services.protocol.outcomes import Scored
from services.results.map_regions import map_statistics
from services.protocol.messages import InspectionRequest, InspectionResult, MapStatistics, verdict_for
from services.results.keys import input_key, result_keys
from services.storage.object_store import ObjectStore
from services.results.encoding import encode_map_png, render_overlay_jpeg, validate_anomaly_map


class InvalidOutcomeError(ValueError):
    """The detector returned a score or map that cannot be published."""


def checked_map(outcome: Scored) -> tuple[np.ndarray, MapStatistics]:
    """Validate a scored outcome; its map and the map statistics of the result event."""
    if not math.isfinite(outcome.score) or not 0.0 <= outcome.score <= 1.0:
        raise InvalidOutcomeError(f"score must be a finite number in [0, 1], got {outcome.score}")
    try:
        anomaly_map = validate_anomaly_map(outcome.anomaly_map)
    except ValueError as error:
        raise InvalidOutcomeError(str(error)) from error
    map_threshold = outcome.threshold if outcome.map_threshold is None else outcome.map_threshold
    statistics = map_statistics(anomaly_map, float(map_threshold), outcome.map_range)
    return anomaly_map, statistics


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
    """Encode everything first (a bad outcome writes nothing), then map, overlay, and result.json last:
    its presence means the frame's objects are complete. Without a store, only the event is built.

    `original`, the image file as received, is kept as input{suffix} next to them, so an operator can
    review the frame and teach the domain from it (the console's "mark normal")."""
    anomaly_map, statistics = checked_map(outcome)
    keys = result_keys(request.domain, request.line, request.timestamp, request.frame_id)
    score, threshold = float(outcome.score), float(outcome.threshold)
    if store is not None:
        map_png = encode_map_png(anomaly_map)
        overlay_jpg = render_overlay_jpeg(
            image, anomaly_map, quality=overlay_quality, value_range=outcome.map_range or (0.0, 1.0),
            outline_threshold=outcome.map_threshold,  # an outline only where the domain has a calibrated pixel threshold
        )  # fmt: skip
        store.put_bytes(bucket, keys.map, map_png, content_type="image/png")
        store.put_bytes(bucket, keys.overlay, overlay_jpg, content_type="image/jpeg")
        if original is not None:
            store.put_bytes(bucket, input_key(keys.result, image_suffix(original)), original)
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
        latency_ms=1000.0 * (time.monotonic() - started),
        map_statistics=statistics,
        input_digest=input_digest,
    )
    if store is not None:
        store.put_json(bucket, keys.result, result)
    return result
