"""The Serve app on the real local stack and Ray: HTTP, Kafka stream, mixed batches, reference replacement."""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime, timezone

import numpy as np
import pytest
import requests
import torch

from services.ingest import FrameConsumer
from services.inspection import DecodedFrame, Scored
from services.messages import InspectionRequest, InspectionResult
from services.producer import FrameProducer
from services.serve_app import InspectionClient
from services.serving.engine import FrameInput

from .conftest import ServedApp, png_bytes, texture

pytestmark = pytest.mark.integration


def decoded(domain: str, image: np.ndarray) -> DecodedFrame:
    request = InspectionRequest(
        frame_id="probe", domain=domain, line="line-x", timestamp=datetime.now(timezone.utc), image=png_bytes(image)
    )
    return DecodedFrame(request=request, image=image)


def test_http_inspect_stores_result_and_refuses_bad_requests(served_app: ServedApp) -> None:
    image = texture(100, size=(72, 64), stripes=4)
    files = {"image": ("frame.png", png_bytes(image), "image/png")}
    form = {"domain": "alpha", "line": "line-1", "frame_id": "http-frame-1"}
    response = requests.post(f"{served_app.http_url}/v1/inspect", files=files, data=form, timeout=60)
    assert response.status_code == 200, response.text
    result = InspectionResult.model_validate(response.json())
    assert result.reference_version == "alpha/v1" and 0.0 <= result.score <= 1.0
    stored = served_app.store.get_json(result.bucket, result.result_key)
    assert stored["frame_id"] == "http-frame-1" and stored["score"] == pytest.approx(result.score)
    assert served_app.store.exists(result.bucket, result.map_key) and served_app.store.exists(result.bucket, result.overlay_key)

    unknown = requests.post(f"{served_app.http_url}/v1/inspect", files=files, data={**form, "domain": "nope"}, timeout=60)
    assert unknown.status_code == 404 and "nope" in unknown.json()["detail"]
    corrupt = {"image": ("frame.png", b"\x89PNG not really", "image/png")}
    bad = requests.post(f"{served_app.http_url}/v1/inspect", files=corrupt, data=form, timeout=60)
    assert bad.status_code == 400 and "image" in bad.json()["detail"]

    domains = requests.get(f"{served_app.http_url}/v1/domains", timeout=30).json()
    assert {d["name"] for d in domains} >= {"alpha", "beta"}
    beta = requests.get(f"{served_app.http_url}/v1/domains/beta", timeout=30).json()
    assert beta["threshold"] == 0.6 and beta["calibration"]["method"] == "given"
    assert requests.get(f"{served_app.http_url}/v1/domains/nope", timeout=30).status_code == 404
    assert requests.get(f"{served_app.http_url}/healthz", timeout=30).json()["status"] == "ok"
    metrics = requests.get(f"{served_app.http_url}/metrics", timeout=30).text
    assert 'inctrl_frames_total{domain="alpha"' in metrics
    assert 'inctrl_errors_total{domain="nope",reason="unknown_domain"} 1.0' in metrics


def test_mixed_domain_batch_scores_equal_single_frame_scores(served_app: ServedApp) -> None:
    frames = [FrameInput("alpha" if i % 2 else "beta", texture(200 + i, stripes=4 + i % 3)) for i in range(6)]
    outcomes = InspectionClient(served_app.app_name)([decoded(f.domain, f.image) for f in frames])
    for frame, outcome in zip(frames, outcomes):
        assert isinstance(outcome, Scored), outcome
        bank = served_app.registry.load(frame.domain).bank
        alone = served_app.detector.detect(torch.from_numpy(frame.image)[None], bank)
        assert outcome.score == pytest.approx(float(alone.scores[0]), abs=1e-5)
        np.testing.assert_allclose(outcome.anomaly_map, alone.maps[0].numpy(), atol=1e-4)
    assert {o.reference_version for o in outcomes} == {"alpha/v1", "beta/v1"}


def test_frames_through_kafka_get_results_in_s3_and_events(
    served_app: ServedApp, service_settings, read_topic: Callable[..., list[bytes]]
) -> None:
    settings = service_settings.model_copy(update={"results_bucket": served_app.settings.results_bucket})
    sent = []
    with FrameProducer(settings) as producer:
        for i in range(12):
            domain, line = ("alpha", "line-a") if i % 3 else ("beta", "line-b")
            sent.append(producer.send_image(png_bytes(texture(300 + i)), domain, line, f"kafka-frame-{i}"))
    with FrameConsumer(settings, inspect=InspectionClient(served_app.app_name)) as consumer:
        stats = consumer.run(max_frames=len(sent), idle_timeout_s=30)
    assert stats.results == len(sent) and not stats.dead_letters
    events = [InspectionResult.from_bytes(value) for value in read_topic(settings.results_topic, len(sent))]
    assert sorted(e.frame_id for e in events) == sorted(r.frame_id for r in sent)
    for event in events:
        stored = json.loads(served_app.store.get_bytes(event.bucket, event.result_key))
        assert stored["frame_id"] == event.frame_id and stored["reference_version"] == f"{event.domain}/v1"


def test_replaced_references_are_picked_up_without_restart(served_app: ServedApp) -> None:
    client = InspectionClient(served_app.app_name)
    probe = texture(400, stripes=9)
    before = client([decoded("beta", probe)])[0]
    served_app.registry.register("beta", "fabric", [texture(500 + i, stripes=2) for i in range(2)], served_app.detector, threshold=0.6)
    deadline = time.monotonic() + 20
    after = client([decoded("beta", probe)])[0]
    while after.reference_version == before.reference_version and time.monotonic() < deadline:
        time.sleep(0.3)
        after = client([decoded("beta", probe)])[0]
    assert before.reference_version.startswith("beta/v") and after.reference_version != before.reference_version
    assert after.score != pytest.approx(before.score, abs=1e-6)
