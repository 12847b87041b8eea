"""The Serve app on the real local stack and Ray: HTTP with auth, Kafka stream, mixed batches, reference
replacement, broken domains and bad frames in mixed batches, and transient failures (timeout, back-pressure,
a replica killed) reported as retryable."""
from __future__ import annotations

from dataclasses import replace

import json
import time
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable, Iterator
from datetime import datetime, timezone

import numpy as np
import pytest
import requests
import torch

from services.protocol.batch import BatchFrame, BatchInspectionResponse, BatchManifest
from services.consumer.frame_consumer import FrameConsumer
from services.protocol.outcomes import DecodedFrame, Retryable, Scored
from services.protocol.messages import DeadLetterReason, InspectionRequest, InspectionResult
from services.producer.frame_producer import FrameProducer
from services.consumer.serve_client import InspectionClient
from services.imaging.geometry import prepare_frame, restore_map
from services.protocol.outcomes import FrameInput

from .conftest import MAX_REFERENCES, ServedApp, png_bytes, texture

pytestmark = pytest.mark.integration


INPUT_SIZE = 64  # the tiny backbone's


def decoded(domain: str, image: np.ndarray) -> DecodedFrame:
    request = InspectionRequest(
        frame_id="probe", domain=domain, line="line-x", timestamp=datetime.now(timezone.utc), image=png_bytes(image)
    )
    return DecodedFrame(request=request, image=image, pixels=prepare_frame(image, INPUT_SIZE))


def unpreparable(domain: str, image: np.ndarray, pixels: np.ndarray) -> DecodedFrame:
    """A frame whose pixels are not what prepare_frame makes (a broken or foreign client)."""
    return replace(decoded(domain, np.zeros((3, 8, 8), np.float32)), image=image, pixels=pixels)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_http_inspect_stores_result_and_refuses_bad_requests(served_app: ServedApp, stack_endpoints) -> None:
    inspect = bearer(stack_endpoints.api_token("consumer"))
    admin = bearer(stack_endpoints.api_token("admin"))
    image = texture(100, size=(72, 64), stripes=4)
    files = {"image": ("frame.png", png_bytes(image), "image/png")}
    form = {"domain": "alpha", "line": "line-1", "frame_id": "http-frame-1"}
    assert requests.post(f"{served_app.http_url}/v1/inspect", files=files, data=form, timeout=60).status_code == 401
    response = requests.post(f"{served_app.http_url}/v1/inspect", files=files, data=form, headers=inspect, timeout=60)
    assert response.status_code == 200, response.text
    result = InspectionResult.model_validate(response.json())
    assert result.reference_version == "alpha/v1" and 0.0 <= result.score <= 1.0
    stored = served_app.store.get_json(result.bucket, result.result_key)
    assert stored["frame_id"] == "http-frame-1" and stored["score"] == pytest.approx(result.score)
    assert served_app.store.exists(result.bucket, result.map_key) and served_app.store.exists(result.bucket, result.overlay_key)

    unknown = requests.post(f"{served_app.http_url}/v1/inspect", files=files, data={**form, "domain": "nope"}, headers=inspect, timeout=60)
    assert unknown.status_code == 404 and "nope" in unknown.json()["detail"]
    corrupt = {"image": ("frame.png", b"\x89PNG not really", "image/png")}
    bad = requests.post(f"{served_app.http_url}/v1/inspect", files=corrupt, data=form, headers=inspect, timeout=60)
    assert bad.status_code == 400 and "image" in bad.json()["detail"]
    strip = {"image": ("strip.png", png_bytes(texture(101, size=(4, 1000))), "image/png")}
    extreme = requests.post(f"{served_app.http_url}/v1/inspect", files=strip, data=form, headers=inspect, timeout=60)
    assert extreme.status_code == 422 and "aspect ratio 250:1 exceeds 64:1" in extreme.json()["detail"]

    assert requests.get(f"{served_app.http_url}/v1/domains", timeout=30).status_code == 401
    assert requests.get(f"{served_app.http_url}/v1/domains", headers=inspect, timeout=30).status_code == 403
    domains = requests.get(f"{served_app.http_url}/v1/domains", headers=admin, timeout=30).json()
    assert {d["name"] for d in domains} >= {"alpha", "beta"}
    beta = requests.get(f"{served_app.http_url}/v1/domains/beta", headers=admin, timeout=30).json()
    assert beta["threshold"] == 0.6 and beta["calibration"]["method"] == "given"
    assert requests.get(f"{served_app.http_url}/v1/domains/nope", headers=admin, timeout=30).status_code == 404
    registration = {"name": "alpha", "class_name": "capsule", "images_uri": "s3://anywhere/at/all/"}
    assert requests.post(f"{served_app.http_url}/v1/domains", json=registration, timeout=30).status_code == 401
    assert requests.post(f"{served_app.http_url}/v1/domains", json=registration, headers=inspect, timeout=30).status_code == 403
    assert served_app.registry.show("alpha").version == 1
    assert requests.get(f"{served_app.http_url}/healthz", timeout=30).json()["status"] == "ok"
    metrics = requests.get(f"{served_app.http_url}/metrics", timeout=30).text
    assert 'inctrl_frames_total{domain="alpha"' in metrics
    assert 'inctrl_errors_total{domain="unregistered",reason="unknown_domain"}' in metrics and "nope" not in metrics


def test_mixed_domain_batch_scores_equal_single_frame_scores(served_app: ServedApp) -> None:
    frames = [("alpha" if i % 2 else "beta", texture(200 + i, stripes=4 + i % 3)) for i in range(6)]
    outcomes = InspectionClient(served_app.app_name)([decoded(domain, image) for domain, image in frames])
    for (domain, image), outcome in zip(frames, outcomes):
        assert isinstance(outcome, Scored), outcome
        # Today's path, in process on the full-resolution float image: the same score and map within 1e-3.
        alone = served_app.detector.detect(torch.from_numpy(image)[None], served_app.registry.load(domain).bank)
        assert outcome.score == pytest.approx(float(alone.scores[0]), abs=1e-3)
        assert outcome.anomaly_map.shape == (INPUT_SIZE, INPUT_SIZE)  # model resolution: the writer restores it
        np.testing.assert_allclose(restore_map(outcome.anomaly_map, *image.shape[1:]), alone.maps[0].numpy(), atol=1e-3)
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
    with FrameConsumer.connect(settings, inspect=InspectionClient(served_app.app_name)) as consumer:
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


def test_post_domains_keeps_the_environment_s_reference_limit_and_records_the_token_s_subject(
    served_app: ServedApp, stack_endpoints
) -> None:
    admin = bearer(stack_endpoints.api_token("admin"))
    bucket = f"{served_app.settings.results_bucket}-refs"
    served_app.store.ensure_bucket(bucket)
    for i in range(MAX_REFERENCES + 1):
        served_app.store.put_bytes(bucket, f"many/{i}.png", png_bytes(texture(600 + i, stripes=5)))
    for i in range(2):
        served_app.store.put_bytes(bucket, f"few/{i}.png", png_bytes(texture(700 + i, stripes=5)))
    url = f"{served_app.http_url}/v1/domains"
    many = {"name": "posted", "class_name": "capsule", "images_uri": f"s3://{bucket}/many/", "threshold": 0.5}
    refused = requests.post(url, json=many, headers=admin, timeout=120)
    assert refused.status_code == 400, refused.text
    assert f"{MAX_REFERENCES + 1} reference images, above the limit of {MAX_REFERENCES}" in refused.json()["detail"]
    created = requests.post(url, json={**many, "images_uri": f"s3://{bucket}/few/"}, headers=admin, timeout=120)
    assert created.status_code == 201, created.text
    assert created.json()["actor"] == "local-admin" and created.json()["shots"] == 2  # the admin token's subject
    assert served_app.registry.show("posted").actor == "local-admin"


def test_a_corrupt_bank_and_bad_frames_fail_alone_in_mixed_batches_of_the_running_app(
    served_app: ServedApp, stack_endpoints
) -> None:
    record = served_app.registry.register("gamma", "tile", [texture(600 + i, stripes=6) for i in range(2)], served_app.detector, threshold=0.5)
    bank_key = served_app.registry.uri.split("/", 3)[3] + f"gamma/v{record.version}/bank.safetensors"
    served_app.store.put_bytes(served_app.registry.bucket, bank_key, b"not a safetensors file at all")
    frames = [
        ("alpha", texture(610)),
        ("gamma", texture(611, stripes=6)),
        ("beta", texture(612, stripes=9)),
        ("alpha", np.full((3, 32, 32), np.nan, np.float32)),
        ("alpha", texture(613, size=(4, 1000))),
        ("gamma", texture(614, stripes=6)),
    ]
    sent = [decoded(domain, image) for domain, image in frames[:3]] + [
        unpreparable("alpha", frames[3][1], np.full((3, INPUT_SIZE, INPUT_SIZE), np.nan, np.float16)),
        unpreparable("alpha", frames[4][1], np.zeros((3, 4, 1000), np.float16)),
        decoded(*frames[5]),
    ]
    outcomes = InspectionClient(served_app.app_name)(sent)
    assert [type(o).__name__ for o in outcomes] == ["Scored", "Rejected", "Scored", "Rejected", "Rejected", "Rejected"]
    for outcome in (outcomes[1], outcomes[5]):
        assert outcome.reason is DeadLetterReason.INFERENCE_ERROR and "domain 'gamma' cannot be served" in outcome.detail
        assert "bank.safetensors" in outcome.detail
    assert "NaN" in outcomes[3].detail and "must be (3, 64, 64) float16 pixels" in outcomes[4].detail
    for index in (0, 2):
        domain, image = frames[index]
        alone = served_app.detector.detect(torch.from_numpy(image)[None], served_app.registry.load(domain).bank)
        assert outcomes[index].score == pytest.approx(float(alone.scores[0]), abs=1e-3)

    # Encoded images from other HTTP clients: the ingress decodes and prepares them (and refuses the 250:1 one).
    manifest = BatchManifest(frames=[BatchFrame(domain=domain, line="line-m", frame_id=f"m-{i}") for i, (domain, _) in enumerate(frames)])
    parts = [("manifest", (None, manifest.model_dump_json(), "application/json"))]
    parts += [("images", (f"m-{i}", b"\x89PNG broken" if i == 3 else png_bytes(image), "image/png")) for i, (_, image) in enumerate(frames)]
    answer = requests.post(f"{served_app.http_url}/v1/inspect/batch", files=parts, headers=bearer(stack_endpoints.api_token("consumer")), timeout=60)
    assert answer.status_code == 200, answer.text
    wire = BatchInspectionResponse.model_validate_json(answer.content).outcomes
    assert [o.error.code if o.error else "scored" for o in wire] == ["scored", "inference_error", "scored", "inference_error", "inference_error", "inference_error"]
    assert "image rejected" in wire[3].error.detail and "gamma" in wire[5].error.detail
    assert "aspect ratio 250:1" in wire[4].error.detail
    assert wire[0].map_shape == (INPUT_SIZE, INPUT_SIZE) and wire[0].original_size == frames[0][1].shape[1:]


FRAGILE_BATCH_WAIT_S = 10.0


def fragile_args(served_app: ServedApp, checkpoint: str) -> dict[str, object]:
    """A second app on the same registry whose pool holds few requests and batches wait long: overload and
    timeouts are easy to produce, and its replica can be killed without touching the shared app."""
    return {
        "checkpoint_uri": checkpoint,
        "backbone": "tiny",
        "nn_backend": "torch",
        "registry_prefix": served_app.registry.uri,
        "batch": {"max_batch_size": 8, "batch_wait_timeout_s": FRAGILE_BATCH_WAIT_S},
        "detector_timeout_s": 4.0,
        "pool": {"num_replicas": 1, "max_ongoing_requests": 8, "max_queued_requests": 4, "ray_actor_options": {"num_cpus": 0.2}},
    }


@pytest.fixture
def fragile_app(served_app: ServedApp, tmp_path) -> Iterator[str]:
    from ray import serve

    from services.serving.app import build_app
    from services.serving.deployment_config import deployment_config_from_args

    checkpoint = served_app.detector.save(tmp_path / "checkpoint")
    serve.run(build_app(deployment_config_from_args(fragile_args(served_app, str(checkpoint)))), name="fragile", route_prefix="/fragile")
    try:
        yield "fragile"
    finally:
        serve.delete("fragile")


def test_timeouts_back_pressure_and_a_killed_replica_are_retryable_never_bad_input(
    served_app: ServedApp, fragile_app: str, stack_endpoints
) -> None:
    import ray

    client = InspectionClient(fragile_app)
    inspect = bearer(stack_endpoints.api_token("consumer"))
    form = {"domain": "alpha", "line": "line-1", "frame_id": "slow-1"}
    files = {"image": ("frame.png", png_bytes(texture(701)), "image/png")}
    manifest = BatchManifest(frames=[BatchFrame(domain="alpha", line="line-1", frame_id="slow-2")])
    parts = [("manifest", (None, manifest.model_dump_json(), "application/json")), ("images", ("i", png_bytes(texture(702)), "image/png"))]
    # Three frames wait together for a batch of eight that never fills: none answered within detector_timeout_s.
    started = time.monotonic()
    with ThreadPoolExecutor(3) as pool:
        by_handle = pool.submit(client, [decoded("alpha", texture(700))])
        single = pool.submit(requests.post, f"{served_app.http_url}/fragile/v1/inspect", files=files, data=form, headers=inspect, timeout=60)
        batch = pool.submit(requests.post, f"{served_app.http_url}/fragile/v1/inspect/batch", files=parts, headers=inspect, timeout=60)
    alone = by_handle.result()[0]
    assert isinstance(alone, Retryable) and "gave no answer within 4.0s" in alone.detail
    assert time.monotonic() - started < 9.0
    answer = single.result()
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "2" and "no answer within 4.0s" in answer.json()["detail"]
    answer = batch.result()
    assert answer.status_code == 200 and BatchInspectionResponse.model_validate_json(answer.content).outcomes[0].error.code == "retryable"

    # 30 frames at once: the replica holds at most eight and four may queue; the rest meet Serve's
    # back-pressure at once. Those held wait for their batch like the three above, or are scored.
    flood = client([decoded("alpha", texture(710 + i)) for i in range(30)])
    assert all(isinstance(o, Scored | Retryable) for o in flood)
    pressed = [o for o in flood if isinstance(o, Retryable)]
    back_pressure = [o for o in pressed if "BackPressureError" in o.detail]
    assert len(back_pressure) >= 15 and all("BackPressureError" in o.detail or "no answer within" in o.detail for o in pressed)

    # A frame waiting in the replica when the replica is killed: retryable, not bad input. Frames of the
    # flood that timed out may still sit in the replica's batch queue; once the batch wait has passed they
    # are gone, and the next frame waits alone.
    time.sleep(FRAGILE_BATCH_WAIT_S + 0.5)
    replicas = [a for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith(f"SERVE_REPLICA::{fragile_app}#pool")]
    assert len(replicas) == 1
    pending = client._handle.inspect_frames.remote([FrameInput("alpha", prepare_frame(texture(750), INPUT_SIZE))])
    time.sleep(1.0)
    ray.kill(ray.get_actor(replicas[0]["name"], namespace=replicas[0]["namespace"]))
    killed = pending.result(timeout_s=30)[0]
    assert isinstance(killed, Retryable) and "detector call to 'pool' failed" in killed.detail and "Actor" in killed.detail
