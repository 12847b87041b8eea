"""The console app over the real S3 server and a SQLite index: auth (401/403), pages, filters, image proxy, API."""
from __future__ import annotations

import io
import re

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from services.auth import TOKEN_COOKIE
from services.protocol.messages import InspectionResult
from services.results.encoding import decode_map_png, jet_colormap

from .conftest import INSPECTOR_TOKEN, READER_TOKEN, REVIEWER_TOKEN, ConsoleWorld, texture

pytestmark = pytest.mark.integration


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def client(console_world: ConsoleWorld) -> TestClient:
    world = console_world
    for i in range(3):
        world.inspect("capsule", "line-1", f"cap-{i}", texture(20 + i, stripes=4), minutes=i)
    world.inspect("capsule", "line-1", "cap-odd", texture(30, stripes=11), minutes=3)
    world.inspect("fabric", "line-2", "fab-0", texture(40, stripes=9), minutes=4)
    return TestClient(world.app(), follow_redirects=False)


def test_every_page_and_api_route_needs_a_token_and_acting_needs_the_review_scope(client: TestClient) -> None:
    frame = "/frames/capsule/line-1/cap-0"
    for path in ("/api/v1/frames", f"/api/v1{frame}", "/api/v1/domains/capsule/versions", f"{frame}/overlay"):
        response = client.get(path)
        assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer", path
        assert client.get(path, headers=bearer("not-a-configured-token-xx")).status_code == 401
        assert client.get(path, headers=bearer(INSPECTOR_TOKEN)).status_code == 403, path
        assert client.get(path, headers=bearer(READER_TOKEN)).status_code == 200, path
    page = client.get("/")  # a browser without a token gets the sign-in form, still as 401
    assert page.status_code == 401 and 'name="token"' in page.text and 'value="/"' in page.text

    for path, body in ((f"/api/v1{frame}/mark-normal", {}), (f"/api/v1{frame}/confirm-defect", {"note": "x"}),
                       ("/api/v1/domains/capsule/activate", {"version": 1})):  # fmt: skip
        assert client.post(path, json=body).status_code == 401, path
        denied = client.post(path, json=body, headers=bearer(READER_TOKEN))
        assert denied.status_code == 403 and "lacks the 'review' scope" in denied.json()["detail"], path
    form = client.post(f"{frame}/mark-normal", data={"note": ""}, cookies={TOKEN_COOKIE: READER_TOKEN})
    assert form.status_code == 403 and "lacks the &#39;review&#39; scope" in form.text
    assert client.get("/healthz").json() == {"status": "ok"}


def test_sign_in_sets_an_http_only_strict_cookie_and_refuses_bad_tokens_and_foreign_redirects(client: TestClient) -> None:
    refused = client.post("/login", data={"token": "wrong-token-wrong-token", "next": "/"})
    assert refused.status_code == 401 and "not valid" in refused.text and TOKEN_COOKIE not in refused.cookies
    inspector = client.post("/login", data={"token": INSPECTOR_TOKEN, "next": "/"})
    assert inspector.status_code == 403 and "lacks the read scope" in inspector.text

    signed_in = client.post("/login", data={"token": READER_TOKEN, "next": "//evil.example/x"})
    assert signed_in.status_code == 303 and signed_in.headers["location"] == "/"
    cookie = signed_in.headers["set-cookie"]
    assert f"{TOKEN_COOKIE}={READER_TOKEN}" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    page = client.get("/", cookies={TOKEN_COOKIE: READER_TOKEN})
    assert page.status_code == 200 and "rita" in page.text
    assert "script-src 'none'" in page.headers["content-security-policy"]
    back = client.post("/login", data={"token": READER_TOKEN, "next": "/frames/capsule/line-1/cap-0?x=1"})
    assert back.headers["location"] == "/frames/capsule/line-1/cap-0?x=1"
    out = client.post("/logout", cookies={TOKEN_COOKIE: READER_TOKEN})
    assert out.status_code == 303 and f'{TOKEN_COOKIE}=""' in out.headers["set-cookie"]


def test_frames_page_groups_by_domain_and_line_filters_and_draws_each_domains_histogram(
    client: TestClient, console_world: ConsoleWorld
) -> None:
    cookies = {TOKEN_COOKIE: READER_TOKEN}
    everything = client.get("/", cookies=cookies).text
    assert re.findall(r'data-testid="line-group" data-domain="(\w+)" data-line="([\w-]+)"', everything) == [
        ("capsule", "line-1"), ("fabric", "line-2"),
    ]  # fmt: skip
    assert len(re.findall(r'data-testid="frame-card"', everything)) == 5
    assert len(re.findall(r'<svg [^>]*class="histogram"', everything)) == 2
    capsule_threshold = console_world.registry.show("capsule").threshold
    assert f'data-threshold="{capsule_threshold:.4f}"' in everything and 'data-threshold="0.6000"' in everything
    assert "drift: no reading" in everything  # no drift watch ran in this test
    assert '/frames/capsule/line-1/cap-0/overlay"' in everything  # thumbnails come through the console
    assert re.findall(r'(?:src|href)="([^"]*)"', everything) and not re.findall(r'(?:src|href)="(?!/)', everything)
    assert client.get("/docs").status_code == 404  # FastAPI's docs pages would load scripts from a CDN

    capsule = client.get("/", params={"domain": "capsule", "line": "line-1"}, cookies=cookies).text
    assert set(re.findall(r'data-frame="([\w-]+)"', capsule)) == {"cap-0", "cap-1", "cap-2", "cap-odd"}
    timed = client.get("/", params={"since": "2026-12-01T08:01", "until": "2026-12-01T08:03"}, cookies=cookies).text
    assert set(re.findall(r'data-frame="([\w-]+)"', timed)) == {"cap-1", "cap-2"}
    verdicts = client.get("/api/v1/frames", params={"verdict": "normal"}, headers=bearer(READER_TOKEN)).json()
    assert verdicts and {f["verdict"] for f in verdicts} == {"normal"}
    none = client.get("/", params={"domain": "capsule", "line": "line-2"}, cookies=cookies).text
    assert 'data-testid="no-frames"' in none
    bad = client.get("/", params={"since": "yesterday"}, cookies=cookies)
    assert bad.status_code == 422 and "since=&#39;yesterday&#39; is not an ISO 8601 time" in bad.text
    assert client.get("/api/v1/frames", params={"verdict": "odd"}, headers=bearer(READER_TOKEN)).status_code == 422


def test_frame_page_and_proxied_images(client: TestClient, console_world: ConsoleWorld) -> None:
    cookies = {TOKEN_COOKIE: REVIEWER_TOKEN}
    page = client.get("/frames/capsule/line-1/cap-odd", cookies=cookies)
    assert page.status_code == 200
    frame = console_world.index.get("capsule", "line-1", "cap-odd")
    assert f"{frame.score:.4f}" in page.text and "capsule/v1" in page.text and "tiny@test" in page.text
    assert 'data-testid="mark-normal"' in page.text and 'data-testid="confirm-defect"' in page.text
    readonly = client.get("/frames/capsule/line-1/cap-odd", cookies={TOKEN_COOKIE: READER_TOKEN}).text
    assert 'data-testid="review-needs-scope"' in readonly and 'data-testid="mark-normal"' not in readonly

    overlay = client.get("/frames/capsule/line-1/cap-odd/overlay", cookies=cookies)
    assert overlay.headers["content-type"] == "image/jpeg"
    assert overlay.content == console_world.store.get_bytes(frame.bucket, frame.overlay_key)
    coloured = Image.open(io.BytesIO(client.get("/frames/capsule/line-1/cap-odd/map", cookies=cookies).content))
    assert coloured.mode == "RGB" and coloured.size == (64, 64)
    values = decode_map_png(console_world.store.get_bytes(frame.bucket, frame.map_key))
    stored = InspectionResult.model_validate_json(console_world.store.get_bytes(frame.bucket, frame.result_key))
    low, high = stored.map_statistics.display_range or (0.0, 1.0)
    inside = values >= stored.map_statistics.threshold
    # A pixel at least 4 px from the outlined region's edge is coloured by the scale alone.
    y, x = next((y, x) for y in range(4, 60) for x in range(4, 60) if len(np.unique(inside[y - 4 : y + 5, x - 4 : x + 5])) == 1)
    np.testing.assert_array_equal(np.asarray(coloured)[y, x], jet_colormap(np.array((values[y, x] - low) / (high - low))))
    original = client.get("/frames/capsule/line-1/cap-odd/image", cookies=cookies)
    pixels = np.asarray(Image.open(io.BytesIO(original.content))).transpose(2, 0, 1) / 255.0
    np.testing.assert_allclose(pixels, texture(30, stripes=11), atol=1 / 255)
    assert client.get("/frames/capsule/line-1/missing", cookies=cookies).status_code == 404
    assert client.get("/frames/capsule/line-1/cap-odd/result.json", cookies=cookies).status_code == 422
    assert client.get("/api/v1/frames/capsule/line-1/missing", headers=bearer(READER_TOKEN)).json()["detail"].endswith(
        "is not in the inspection index"
    )


def test_review_by_form_and_by_api_then_rollback_from_the_domain_page(client: TestClient, console_world: ConsoleWorld) -> None:
    cookies = {TOKEN_COOKIE: REVIEWER_TOKEN}
    marked = client.post("/frames/capsule/line-1/cap-odd/mark-normal", data={"note": " looks fine "}, cookies=cookies)
    assert marked.status_code == 303 and marked.headers["location"] == "/frames/capsule/line-1/cap-odd?done=marked_normal&version=2"
    shown = client.get(marked.headers["location"], cookies=cookies).text
    assert "capsule is now at v2" in shown and "looks fine" in shown and "victor" in shown
    again = client.post("/api/v1/frames/capsule/line-1/cap-odd/mark-normal", json={}, headers=bearer(REVIEWER_TOKEN))
    assert again.status_code == 409 and "already a reference" in again.json()["detail"]

    defect = client.post("/api/v1/frames/fabric/line-2/fab-0/confirm-defect", json={"note": "hole"}, headers=bearer(REVIEWER_TOKEN))
    assert defect.status_code == 200 and defect.json()["example"]["mask_uri"].endswith("/fabric/masks/line-2--fab-0.png")

    versions = client.get("/api/v1/domains/capsule/versions", headers=bearer(READER_TOKEN)).json()
    assert [(v["version"], v["actor"], v["parent_version"]) for v in versions] == [(1, "setup", None), (2, "victor", 1)]
    domain_page = client.get("/domains/capsule", cookies=cookies).text
    assert 'data-testid="domain-version">current v2' in domain_page and 'data-testid="activate"' in domain_page
    rolled = client.post("/domains/capsule/activate", data={"version": "1"}, cookies=cookies)
    assert rolled.status_code == 303 and console_world.registry.current_version("capsule") == 1
    forward = client.post("/api/v1/domains/capsule/activate", json={"version": 2}, headers=bearer(REVIEWER_TOKEN))
    assert forward.status_code == 200 and console_world.registry.current_version("capsule") == 2
    missing = client.post("/api/v1/domains/capsule/activate", json={"version": 9}, headers=bearer(REVIEWER_TOKEN))
    assert missing.status_code == 404
