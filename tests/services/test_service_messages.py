"""Message schemas: round trips, exactly-one image source, verdict consistency, wire format."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
from pydantic import ValidationError

from services.protocol.messages import (
    DeadLetter,
    DeadLetterReason,
    InspectionRequest,
    InspectionResult,
    MapStatistics,
    Verdict,
    verdict_for,
)

NOW = datetime(2026, 3, 1, 12, 30, tzinfo=timezone.utc)


def request_fields(**overrides: object) -> dict[str, object]:
    return {"frame_id": "cam1-0001", "domain": "washer", "line": "line-3", "timestamp": NOW, **overrides}


def test_inline_request_round_trips_with_base64_on_the_wire() -> None:
    request = InspectionRequest(**request_fields(image=b"\x89PNG\x00\xff"))
    wire = json.loads(request.to_bytes())
    assert wire["image"] == "iVBORwD/"  # base64 of the raw bytes
    assert wire["schema_version"] == 1
    assert InspectionRequest.from_bytes(request.to_bytes()) == request


def test_uri_request_round_trips() -> None:
    request = InspectionRequest(**request_fields(image_uri="s3://frames-bucket/a/b.png"))
    assert InspectionRequest.from_bytes(request.to_bytes()).image_uri == "s3://frames-bucket/a/b.png"


@pytest.mark.parametrize(
    "sources",
    [{}, {"image": b"x", "image_uri": "s3://bucket-a/k"}, {"image": b""}],
    ids=["neither", "both", "empty-inline"],
)
def test_request_needs_exactly_one_non_empty_image_source(sources: dict[str, object]) -> None:
    with pytest.raises(ValidationError, match="image"):
        InspectionRequest(**request_fields(**sources))


@pytest.mark.parametrize(
    "overrides",
    [
        {"frame_id": "../etc/passwd", "image": b"x"},
        {"domain": "", "image": b"x"},
        {"timestamp": datetime(2026, 3, 1), "image": b"x"},
        {"image_uri": "http://host/key"},
        {"image": b"x", "extra_field": 1},
    ],
    ids=["path-in-frame-id", "empty-domain", "naive-timestamp", "non-s3-uri", "unknown-field"],
)
def test_request_rejects_unsafe_or_incomplete_fields(overrides: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        InspectionRequest(**request_fields(**overrides))


def test_request_from_bytes_rejects_malformed_json_and_future_versions() -> None:
    with pytest.raises(ValidationError, match="Invalid JSON"):
        InspectionRequest.from_bytes(b"{not json")
    future = json.loads(InspectionRequest(**request_fields(image=b"x")).to_bytes())
    future["schema_version"] = 2
    with pytest.raises(ValidationError, match="schema_version"):
        InspectionRequest.from_bytes(json.dumps(future).encode())


def test_verdict_is_anomalous_at_or_above_threshold() -> None:
    assert verdict_for(0.5, 0.5) is Verdict.ANOMALOUS
    assert verdict_for(0.49, 0.5) is Verdict.NORMAL


def result_fields(**overrides: object) -> dict[str, object]:
    return {
        "frame_id": "f1", "domain": "washer", "line": "l1", "timestamp": NOW, "score": 0.7, "threshold": 0.5,
        "verdict": Verdict.ANOMALOUS, "bucket": "results", "result_key": "r", "map_key": "m", "overlay_key": "o",
        "model_version": "m1", "reference_version": "r1", "latency_ms": 12.5,
        "map_statistics": MapStatistics(max=0.9, mean=0.1, threshold=0.5, area_above_threshold=0.02),
        **overrides,
    }  # fmt: skip


def test_result_round_trips_and_rejects_contradicting_verdict() -> None:
    result = InspectionResult(**result_fields())
    assert InspectionResult.from_bytes(result.to_bytes()) == result
    with pytest.raises(ValidationError, match="contradicts"):
        InspectionResult(**result_fields(verdict=Verdict.NORMAL))
    with pytest.raises(ValidationError):
        InspectionResult(**result_fields(score=1.5))


def test_dead_letter_keeps_binary_payload_and_reason() -> None:
    letter = DeadLetter(
        reason=DeadLetterReason.UNDECODABLE_IMAGE, detail="corrupt", topic="frames", partition=2, offset=41,
        payload=b"\x00\x01garbage", payload_size=9, payload_truncated=False,
    )  # fmt: skip
    parsed = DeadLetter.from_bytes(letter.to_bytes())
    assert parsed.payload == b"\x00\x01garbage"
    assert parsed.reason is DeadLetterReason.UNDECODABLE_IMAGE
    assert json.loads(letter.to_bytes())["reason"] == "undecodable_image"
