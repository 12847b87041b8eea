"""POST /v1/inspect/batch and HttpInspectionClient over real HTTP (uvicorn), with a gateway that scores by pixel means.

The gateway stands in for the Ray Serve ingress only; routes, auth, limits, multipart, wire format, retries and
errors are real.
"""
from __future__ import annotations

import asyncio
import io
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timezone

import numpy as np
import pytest
import requests
import uvicorn
from PIL import Image
from pydantic import SecretStr

from services.auth import Scope, TokenAuthority, TokenGrant

from services.protocol.batch import BatchFrame, BatchInspectionResponse, BatchManifest, FrameOutcome, ModelInfo, pixels_from_part
from services.serving.http_api import DomainRegistration, InspectionRetryLater, create_http_app
from services.consumer.http_client import (
    HttpInspectionClient,
    InspectionRequestRejected,
)
from services.protocol.outcomes import DecodedFrame, InspectionOutcome, InspectionUnavailable, Rejected, Scored
from services.protocol.messages import DeadLetterReason, InspectionRequest
from services.metrics import InspectionMetrics
from services.registry.records import DomainRecord, RegistryError
from services.serving.settings import ServingSettings
from services.imaging.decoding import ImageDecodeError, decode_image
from services.imaging.geometry import prepare_frame
from services.results.writer import InvalidOutcomeError, encode_result

SLOW_S = 1.5
INSPECT_TOKEN = "inspect-token-0123456789"
READ_TOKEN = "read-token-0123456789abc"
ADMIN_TOKEN = "admin-token-0123456789ab"
GRANTS = {
    INSPECT_TOKEN: TokenGrant(subject="consumer", scopes=frozenset({Scope.INSPECT})),
    READ_TOKEN: TokenGrant(subject="viewer", scopes=frozenset({Scope.READ})),
    ADMIN_TOKEN: TokenGrant(subject="ada", scopes=frozenset({Scope.ADMIN})),
}
MAX_UPLOAD_BYTES = 200_000
MAX_BATCH_FRAMES = 6
INPUT_SIZE = 16


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class MeanGateway:
    """Scores a frame by its mean brightness; its map is the per-pixel mean over channels."""

    def __init__(self) -> None:
        self.metrics = InspectionMetrics()
        self.batches = 0
        self.registrations: list[tuple[str, str]] = []

    async def inspect_batch(self, frames: list[BatchFrame], images: list[bytes]) -> BatchInspectionResponse:
        self.batches += 1
        if any(frame.domain == "slow" for frame in frames):
            await asyncio.sleep(SLOW_S)
        if any(frame.domain == "broken-gateway" for frame in frames):
            raise RegistryError("the gateway broke")
        if any(frame.domain == "overloaded" for frame in frames):
            raise InspectionRetryLater("every replica is busy")
        return BatchInspectionResponse(outcomes=[FrameOutcome.from_outcome(f.frame_id, score(f, i)) for f, i in zip(frames, images)])

    async def model_info(self) -> ModelInfo:
        return ModelInfo(input_size=INPUT_SIZE, backbone="mean")

    async def health(self) -> dict[str, object]:
        return {"status": "ok"}

    async def list_domains(self) -> list[DomainRecord]:
        return []

    async def register_domain(self, registration: DomainRegistration, actor: str) -> DomainRecord:
        self.registrations.append((registration.name, actor))
        raise RegistryError(f"no images under {registration.images_uri}")


def score(frame: BatchFrame, image: bytes) -> InspectionOutcome:
    if frame.domain == "unknown":
        return Rejected(DeadLetterReason.UNKNOWN_DOMAIN, f"domain {frame.domain!r} is not registered")
    try:
        pixels = pixels_from_part(image, INPUT_SIZE, frame.frame_id).astype(np.float32) if frame.original_size else decode_image(image)
    except (ImageDecodeError, ValueError) as error:
        return Rejected(DeadLetterReason.INFERENCE_ERROR, f"image rejected: {error}")
    return Scored(float(pixels.mean()), pixels.mean(axis=0), 0.5, "mean@1", f"{frame.domain}/v1")


def png(seed: int, size: tuple[int, int]) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def frame(domain: str, frame_id: str, image: bytes) -> DecodedFrame:
    request = InspectionRequest(frame_id=frame_id, domain=domain, line="line-1", timestamp=datetime.now(timezone.utc), image=image)
    try:
        pixels = decode_image(image)
    except ImageDecodeError:
        pixels = np.zeros((3, 1, 1), np.float32)
    return DecodedFrame(request=request, image=pixels, encoded=image)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class AppServer:
    """The FastAPI app on a real port, in a background thread."""

    def __init__(self, gateway: MeanGateway, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/"
        authority = TokenAuthority(GRANTS)
        serving = ServingSettings(max_upload_bytes=MAX_UPLOAD_BYTES, max_batch_frames=MAX_BATCH_FRAMES, retry_after_s=7)
        app = create_http_app(gateway, authority, serving)
        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


@pytest.fixture
def gateway() -> MeanGateway:
    return MeanGateway()


@pytest.fixture
def app_server(gateway: MeanGateway) -> Iterator[AppServer]:
    server = AppServer(gateway, free_port())
    server.start()
    yield server
    server.stop()


def test_batch_returns_outcomes_in_order_with_maps_as_stored(app_server: AppServer) -> None:
    frames = [
        frame("capsule", "f-0", png(0, (40, 56))),
        frame("unknown", "f-1", png(1, (32, 32))),
        frame("capsule", "f-2", b"\x89PNG truncated"),
        frame("fabric", "f-3", png(3, (24, 72))),
    ]
    outcomes = HttpInspectionClient(app_server.url, timeout_s=10, token=SecretStr(INSPECT_TOKEN))(frames)
    assert [getattr(o, "reason", None) for o in outcomes] == [None, DeadLetterReason.UNKNOWN_DOMAIN, DeadLetterReason.INFERENCE_ERROR, None]
    assert isinstance(outcomes[0], Scored) and isinstance(outcomes[3], Scored)
    assert "image rejected" in outcomes[2].detail and "'unknown'" in outcomes[1].detail
    for sent, got in ((frames[0], outcomes[0]), (frames[3], outcomes[3])):
        expected = score(BatchFrame(domain=sent.request.domain, line="l", frame_id="x"), sent.encoded or b"")
        assert got.score == pytest.approx(expected.score) and got.threshold == 0.5
        assert got.reference_version == f"{sent.request.domain}/v1" and got.model_version == "mean@1"
        assert got.anomaly_map.shape == sent.image.shape[1:]
        # Maps travel as float16: within the service's 1e-3 promise of the map the detector made.
        np.testing.assert_allclose(got.anomaly_map.astype(np.float32), expected.anomaly_map, atol=5e-4)


def test_prepared_frames_travel_as_pixels_with_their_size_and_the_input_size_is_asked_once(
    app_server: AppServer, gateway: MeanGateway
) -> None:
    client = HttpInspectionClient(app_server.url, timeout_s=10, token=SecretStr(INSPECT_TOKEN))
    assert client.input_size() == INPUT_SIZE
    sent = [frame("capsule", f"p-{i}", png(i, (40 + 8 * i, 56))) for i in range(3)]
    prepared = [replace(f, pixels=prepare_frame(f.image, client.input_size())) for f in sent]
    outcomes = client(prepared)
    for ready, got in zip(prepared, outcomes):
        assert isinstance(got, Scored) and got.anomaly_map.shape == (INPUT_SIZE, INPUT_SIZE)
        assert got.score == pytest.approx(float(ready.pixels.astype(np.float32).mean()), abs=1e-6)
    unprepared = client(sent[:1])[0]  # an image file still works: the ingress decodes it
    assert isinstance(unprepared, Scored) and unprepared.anomaly_map.shape == sent[0].image.shape[1:]
    with pytest.raises(ValueError, match="expected 1536 for"):
        pixels_from_part(b"\x00" * 10, INPUT_SIZE, "frame x")


def test_route_refuses_a_manifest_that_does_not_match_the_images(app_server: AppServer) -> None:
    url = app_server.url + "v1/inspect/batch"
    manifest = '{"frames": [{"domain": "capsule", "line": "l1", "frame_id": "a"}]}'
    two_images = [("manifest", (None, manifest, "application/json"))] + [("images", (f"i{i}", png(i, (8, 8)), "image/png")) for i in range(2)]
    response = requests.post(url, files=two_images, headers=bearer(INSPECT_TOKEN), timeout=10)
    assert response.status_code == 422 and "1 frames but 2 image parts" in response.json()["detail"]
    bad_name = [("manifest", (None, manifest.replace('"a"', '"../etc"'), "application/json")), two_images[1]]
    response = requests.post(url, files=bad_name, headers=bearer(INSPECT_TOKEN), timeout=10)
    assert response.status_code == 422 and "frame_id" in response.text


def test_a_refused_batch_raises_rejected_with_the_servers_answer(app_server: AppServer) -> None:
    client = HttpInspectionClient(app_server.url, timeout_s=10, max_attempts=3, initial_backoff_s=0.05, token=SecretStr(INSPECT_TOKEN))
    with pytest.raises(InspectionRequestRejected, match="HTTP 400.*the gateway broke"):
        client([frame("broken-gateway", "f-0", png(0, (8, 8)))])


def test_client_retries_until_the_service_comes_up(gateway: MeanGateway) -> None:
    port = free_port()
    server = AppServer(gateway, port)
    starter = threading.Timer(0.8, server.start)
    starter.start()
    try:
        client = HttpInspectionClient(server.url, timeout_s=10, max_attempts=8, initial_backoff_s=0.2, max_backoff_s=0.4, token=SecretStr(INSPECT_TOKEN))
        assert not client.reachable()
        outcomes = client([frame("capsule", "f-0", png(0, (16, 16)))])
        assert isinstance(outcomes[0], Scored) and gateway.batches == 1
        assert client.reachable()
    finally:
        starter.join()
        server.stop()


def test_client_gives_up_with_unavailable_after_bounded_attempts() -> None:
    client = HttpInspectionClient(f"http://127.0.0.1:{free_port()}", timeout_s=2, max_attempts=3, initial_backoff_s=0.05)
    started = time.monotonic()
    with pytest.raises(InspectionUnavailable, match="after 3 attempts: cannot connect"):
        client([frame("capsule", "f-0", png(0, (8, 8)))])
    assert time.monotonic() - started < 2.0


def test_a_timed_out_batch_is_unavailable_and_not_resent(app_server: AppServer, gateway: MeanGateway) -> None:
    client = HttpInspectionClient(app_server.url, timeout_s=0.5, max_attempts=4, initial_backoff_s=0.05, token=SecretStr(INSPECT_TOKEN))
    with pytest.raises(InspectionUnavailable, match="no answer within 0.5s"):
        client([frame("slow", "f-0", png(0, (8, 8)))])
    time.sleep(SLOW_S)
    assert gateway.batches == 1


def test_invalid_detector_output_becomes_a_frame_error_not_a_failed_batch() -> None:
    broken = Scored(0.4, np.full((4, 4), np.nan, np.float32), 0.5, "m", "r")
    decoded = FrameOutcome.model_validate_json(FrameOutcome.from_outcome("f-0", broken).model_dump_json()).to_outcome()
    # The writer validates once, where the map is restored: that frame alone is the detector's error.
    request = InspectionRequest(frame_id="f-0", domain="d", line="l", timestamp=datetime.now(timezone.utc), image=b"x")
    with pytest.raises(InvalidOutcomeError, match="NaN"):
        encode_result(request, np.zeros((3, 8, 8), np.float32), decoded, "b")
    with pytest.raises(ValueError, match="either score, threshold and map, or an error"):
        FrameOutcome(frame_id="f-1", score=0.3)
    short = FrameOutcome(frame_id="f-2", score=0.3, threshold=0.5, map_shape=(4, 4), map_f16="AAAA")
    with pytest.raises(ValueError, match="map has 3 bytes, expected 32 for 4x4"):
        short.to_outcome()


def batch_parts(count: int, size: tuple[int, int] = (8, 8)) -> list[tuple[str, tuple[str | None, bytes | str, str]]]:
    manifest = BatchManifest(frames=[BatchFrame(domain="capsule", line="l1", frame_id=f"f-{i}") for i in range(count)])
    return [("manifest", (None, manifest.model_dump_json(), "application/json"))] + [
        ("images", (f"i{i}", png(i, size), "image/png")) for i in range(count)
    ]


def test_routes_need_a_token_with_their_scope_and_health_and_metrics_stay_open(app_server: AppServer, gateway: MeanGateway) -> None:
    base = app_server.url.rstrip("/")
    batch = base + "/v1/inspect/batch"
    assert requests.post(batch, files=batch_parts(1), timeout=10).status_code == 401
    wrong = requests.post(batch, files=batch_parts(1), headers=bearer("not-a-token-at-all-000"), timeout=10)
    assert wrong.status_code == 401 and wrong.headers["WWW-Authenticate"] == "Bearer"
    assert requests.post(batch, files=batch_parts(1), headers=bearer(READ_TOKEN), timeout=10).status_code == 403
    assert requests.post(batch, files=batch_parts(1), headers=bearer(INSPECT_TOKEN), timeout=10).status_code == 200
    assert requests.post(batch, files=batch_parts(1), headers=bearer(ADMIN_TOKEN), timeout=10).status_code == 200
    single = {"domain": "capsule", "line": "l1", "frame_id": "f-0"}
    image = {"image": ("i", png(0, (8, 8)), "image/png")}
    assert requests.post(base + "/v1/inspect", data=single, files=image, timeout=10).status_code == 401
    assert requests.post(base + "/v1/inspect", data=single, files=image, headers=bearer(READ_TOKEN), timeout=10).status_code == 403
    assert requests.get(base + "/v1/domains", timeout=10).status_code == 401
    assert requests.get(base + "/v1/domains", headers=bearer(INSPECT_TOKEN), timeout=10).status_code == 403
    assert requests.get(base + "/v1/domains", headers=bearer(READ_TOKEN), timeout=10).json() == []
    registration = {"name": "capsule", "class_name": "capsule", "images_uri": "s3://refs/capsule/"}
    assert requests.post(base + "/v1/domains", json=registration, timeout=10).status_code == 401
    for token in (READ_TOKEN, INSPECT_TOKEN):
        assert requests.post(base + "/v1/domains", json=registration, headers=bearer(token), timeout=10).status_code == 403
    assert gateway.registrations == []
    refused = requests.post(base + "/v1/domains", json=registration, headers=bearer(ADMIN_TOKEN), timeout=10)
    assert refused.status_code == 400 and gateway.registrations == [("capsule", "ada")]  # the admin is the actor
    assert requests.get(base + "/healthz", timeout=10).status_code == 200
    metrics = requests.get(base + "/metrics", timeout=10)
    assert metrics.status_code == 200 and 'inctrl_http_requests_total{route="/v1/domains",status="403"} 3.0' in metrics.text


def test_uploads_above_the_limit_get_413_before_the_body_is_read(app_server: AppServer, gateway: MeanGateway) -> None:
    url = app_server.url + "v1/inspect/batch"
    big = [batch_parts(1)[0], ("images", ("big", b"\0" * (MAX_UPLOAD_BYTES + 1), "image/png"))]
    declared = requests.post(url, files=big, headers=bearer(INSPECT_TOKEN), timeout=10)
    assert declared.status_code == 413 and f"exceeds the limit of {MAX_UPLOAD_BYTES} bytes" in declared.json()["detail"]
    # No Content-Length (chunked): counted as it arrives, refused once past the limit, not read to the end.
    sent = 0

    def chunks():  # noqa: ANN202 - a generator body makes requests send it chunked
        nonlocal sent
        yield b'--b\r\nContent-Disposition: form-data; name="images"; filename="i"\r\n\r\n'
        for _ in range(1000):  # 64 MB if it were read to the end
            sent += 64_000
            yield b"x" * 64_000

    chunked = requests.post(url, data=chunks(), headers={**bearer(INSPECT_TOKEN), "Content-Type": "multipart/form-data; boundary=b"}, timeout=10)
    assert chunked.status_code == 413
    # What the server read is exact: at most one transport read past the limit. What the client managed to send
    # before the connection closed depends on the kernel's socket buffers (megabytes on loopback), so it is only
    # bounded by the whole body: the generator must not have run to its end.
    read = int(re.search(r"more than (\d+) bytes", chunked.json()["detail"]).group(1))
    assert MAX_UPLOAD_BYTES < read <= MAX_UPLOAD_BYTES + 256 * 1024
    assert sent < 64_000_000
    assert gateway.batches == 0


def test_an_anonymous_upload_is_refused_before_its_body_is_read(app_server: AppServer, gateway: MeanGateway) -> None:
    sent = 0

    def chunks():  # noqa: ANN202 - a generator body makes requests send it chunked
        nonlocal sent
        yield b'--b\r\nContent-Disposition: form-data; name="images"; filename="i"\r\n\r\n'
        for _ in range(1000):
            sent += 64_000
            yield b"x" * 64_000

    for headers in ({}, bearer("an-unknown-token-0123456789")):
        sent = 0
        answer = requests.post(
            app_server.url + "v1/inspect/batch", data=chunks(), headers={**headers, "Content-Type": "multipart/form-data; boundary=b"}, timeout=10
        )
        assert answer.status_code == 401 and answer.headers["WWW-Authenticate"] == "Bearer"
        assert sent < 64_000_000  # closed before the body ends; how much the socket buffers took first varies
    assert gateway.batches == 0


def test_a_batch_above_the_part_limit_is_refused(app_server: AppServer, gateway: MeanGateway) -> None:
    url = app_server.url + "v1/inspect/batch"
    answer = requests.post(url, files=batch_parts(MAX_BATCH_FRAMES + 1), headers=bearer(INSPECT_TOKEN), timeout=10)
    assert answer.status_code == 413 and f"{MAX_BATCH_FRAMES + 1} images exceed the limit of {MAX_BATCH_FRAMES}" in answer.json()["detail"]
    assert gateway.batches == 0
    assert requests.post(url, files=batch_parts(MAX_BATCH_FRAMES), headers=bearer(INSPECT_TOKEN), timeout=10).status_code == 200


def test_infrastructure_trouble_is_503_with_retry_after_and_the_client_replays(app_server: AppServer, gateway: MeanGateway) -> None:
    manifest = BatchManifest(frames=[BatchFrame(domain="overloaded", line="l1", frame_id="f-0")])
    parts = [("manifest", (None, manifest.model_dump_json(), "application/json")), ("images", ("i", png(0, (8, 8)), "image/png"))]
    answer = requests.post(app_server.url + "v1/inspect/batch", files=parts, headers=bearer(INSPECT_TOKEN), timeout=10)
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "7" and "every replica is busy" in answer.json()["detail"]
    client = HttpInspectionClient(app_server.url, timeout_s=10, max_attempts=2, initial_backoff_s=0.05, token=SecretStr(INSPECT_TOKEN))
    with pytest.raises(InspectionUnavailable, match="HTTP 503"):
        client([frame("overloaded", "f-0", png(0, (8, 8)))])
