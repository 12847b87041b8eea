"""The console in a real browser against the real local system: headless Chromium (OS package) driven by
Playwright, frames streamed through Tansu -> FrameConsumer -> Ray Serve (tiny backbone) -> SeaweedFS, the
results indexed by the Indexer (with its drift watch) into SQLite, the console served by uvicorn.

The operator signs in, filters, opens a flagged frame and marks it normal; the registry then has a new
version, and the next frame of that product, scored by the Serve replicas after their bank re-check,
scores lower than the frames like it did before. Screenshots go to the test's temp folder (and to
$INCTRL_CONSOLE_SCREENSHOTS when set, which is how docs/console.png was made).

Frames travel by reference (the producer's inline limit is set to one byte): the console reads a frame's
original image from the frames bucket (services/console/originals.py).
"""
from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import uvicorn

from model import InCTRLv2, InCTRLv2Config
from services.auth import TokenAuthority
from services.console.app import ConsoleServices, create_console_app
from services.console.detector_source import LazyDetector
from services.console.labelled import LabelledExamples
from services.console.originals import OriginalImages
from services.console.review import ReviewService
from services.console.settings import ConsoleSettings
from services.index import IndexSettings, InspectionIndex, create_index_engine, upgrade
from services.index.drift import DriftWatch, RegistryCalibrations
from services.index.indexer import Indexer
from services.consumer.frame_consumer import FrameConsumer
from services.storage.object_store import ObjectStore
from services.producer.frame_producer import FrameProducer
from services.registry.domain_registry import DomainRegistry
from services.settings import ServiceSettings
from inctrl.dev.local_stack import StackEndpoints

from .conftest import GRANTS, REVIEWER_TOKEN, png_bytes, texture

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
# DESIGN.md section 5: without these, Chromium's background connections fail against the closed network.
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"]  # fmt: skip
APP_NAME = "console-browser"
# (domain, line, stripes of its normal product, stripes of the off-pattern variant a few frames show)
LINES = (("capsule", "line-1", 4, 9), ("pcb", "line-2", 11, 5), ("fabric", "line-3", 7, 14))
FRAMES_PER_LINE = 8
VARIANT_FRAMES = (5, 7)  # frame numbers that show the variant


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class LiveSystem:
    settings: ServiceSettings
    store: ObjectStore
    registry: DomainRegistry
    index: InspectionIndex
    index_settings: IndexSettings
    console_url: str

    def stream(self, frames: list[tuple[str, str, str, np.ndarray]]) -> None:
        """Produce, consume through Serve, index (and run the drift watch): as the deployed system does."""
        from services.consumer.serve_client import InspectionClient

        with FrameProducer(self.settings, self.store) as producer:
            for domain, line, frame_id, image in frames:
                producer.send_image(png_bytes(image), domain, line, frame_id)
        with FrameConsumer.connect(self.settings, inspect=InspectionClient(APP_NAME)) as consumer:
            stats = consumer.run(max_frames=len(frames), idle_timeout_s=60)
        assert stats.results == len(frames) and not stats.dead_letters, stats
        calibrations = RegistryCalibrations(self.registry, refresh_s=0.0)
        factory = lambda publish, metrics: DriftWatch(self.index, calibrations, self.index_settings, publish, metrics)  # noqa: E731
        with Indexer(self.settings, self.index_settings, self.index, drift_watch_factory=factory) as indexer:
            indexed = indexer.run(max_events=len(frames), idle_timeout_s=30)
            indexer.watch_drift()
        assert indexed.written == len(frames), indexed


@pytest.fixture
def live_system(
    stack_endpoints: StackEndpoints, service_settings: ServiceSettings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveSystem]:
    """Ray + the Serve app over a tiny checkpoint, three registered domains, the console on a free port."""
    import ray
    from ray import serve

    from services.serving.app import build_app
    from services.serving.deployment_config import deployment_config_from_args

    if ray.is_initialized():
        pytest.fail("the browser test starts its own Ray (its replicas must see this stack's S3); one is already running")
    suffix = uuid.uuid4().hex[:8]
    settings = service_settings.model_copy(update={"inline_image_max_bytes": 1})
    environment = {**stack_endpoints.environment(), "INCTRL_RESULTS_BUCKET": settings.results_bucket, "INCTRL_BANK_RECHECK_S": "1"}
    saved = {key: os.environ.get(key) for key in environment}
    os.environ.update(environment)  # Ray workers inherit the environment of the process that starts Ray
    store = ObjectStore.from_settings(settings)
    detector = InCTRLv2(InCTRLv2Config(backbone="tiny", pretrained=None))
    checkpoint = detector.save(tmp_path_factory.mktemp("checkpoint"))
    registry = DomainRegistry(store, f"s3://models-{suffix}/registry/")
    for domain, _, stripes, _ in LINES:
        normals = [texture(100 * stripes + i, stripes=stripes) for i in range(6)]
        registry.register(domain, domain, normals[:3], detector, calibration_images=normals[3:], actor="setup")
    ray_dir = tempfile.mkdtemp(prefix="inctrl-ray-", dir="/tmp")  # short: Ray's socket paths are length-limited
    ray.init(num_cpus=4, _temp_dir=ray_dir, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": _free_port()})
    args = {
        "checkpoint_uri": str(checkpoint), "backbone": "tiny", "nn_backend": "faiss", "registry_prefix": registry.uri,
        "batch": {"max_batch_size": 8, "batch_wait_timeout_s": 0.05},
        "pool": {"num_replicas": 1, "ray_actor_options": {"num_cpus": 0.5}},
    }  # fmt: skip
    serve.run(build_app(deployment_config_from_args(args)), name=APP_NAME, route_prefix=f"/{APP_NAME}")

    index_settings = IndexSettings(
        database_url=f"sqlite:///{tmp_path_factory.mktemp('index') / 'index.sqlite3'}", consumer_group=f"indexers-{suffix}",
        drift_window=50, drift_min_window=5, poll_timeout_ms=200,
    )  # fmt: skip
    engine = create_index_engine(index_settings.database_url)
    upgrade(engine)
    index = InspectionIndex(engine)
    console_settings = ConsoleSettings(labelled_prefix=f"s3://models-{suffix}/labelled/")
    originals = OriginalImages(store, settings.frames_bucket)
    review = ReviewService(
        index, registry, store, originals, LabelledExamples(store, console_settings.labelled_prefix),
        detector=LazyDetector(str(checkpoint), store),
    )  # fmt: skip
    app = create_console_app(ConsoleServices(review, originals, store, TokenAuthority(GRANTS), console_settings))
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "console did not start"
        time.sleep(0.05)
    try:
        yield LiveSystem(settings, store, registry, index, index_settings, f"http://127.0.0.1:{port}")
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        serve.shutdown()
        ray.shutdown()
        shutil.rmtree(ray_dir, ignore_errors=True)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    assert CHROMIUM.is_file(), f"{CHROMIUM} is missing: apt-get install -y chromium chromium-driver (.ci/run does)"
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


def _screenshot(page, tmp_path: Path, name: str) -> Path:  # noqa: ANN001 - a Playwright page
    target = tmp_path / name
    page.screenshot(path=str(target), full_page=True)
    if os.environ.get("INCTRL_CONSOLE_SCREENSHOTS"):
        shared = Path(os.environ["INCTRL_CONSOLE_SCREENSHOTS"])
        shared.mkdir(parents=True, exist_ok=True)
        shutil.copy(target, shared / name)
    return target


def test_operator_marks_a_flagged_frame_normal_in_the_browser_and_the_next_such_frame_scores_lower(
    live_system: LiveSystem, browser, tmp_path: Path  # noqa: ANN001 - a Playwright browser
) -> None:
    system = live_system
    frames = []
    for number in range(FRAMES_PER_LINE):
        for domain, line, stripes, variant in LINES:
            pattern = variant if number in VARIANT_FRAMES else stripes
            frames.append((domain, line, f"{domain}-{number:03d}", texture(1000 * stripes + number, stripes=pattern)))
    system.stream(frames)

    page = browser.new_page(viewport={"width": 1360, "height": 900})
    response = page.goto(system.console_url + "/")
    assert response.status == 401 and page.locator("input[name=token]").is_visible()  # signed out: the sign-in form
    page.fill("input[name=token]", REVIEWER_TOKEN)
    page.click("button[type=submit]")
    page.wait_for_selector("[data-testid=line-group]")
    assert page.locator("[data-testid=who]").inner_text().startswith("victor")
    groups = page.locator("[data-testid=line-group]")
    assert [groups.nth(i).get_attribute("data-line") for i in range(groups.count())] == ["line-1", "line-3", "line-2"]
    assert page.locator("[data-testid=frame-card]").count() == len(frames)
    assert page.locator("svg.histogram").count() == 3 and page.locator("[data-testid=drift]").count() >= 3
    thumbnails = page.locator("[data-testid=frame-card] img")
    page.wait_for_function("() => [...document.querySelectorAll('.card img')].every(i => i.complete && i.naturalWidth > 0)")
    assert thumbnails.count() == len(frames)
    _screenshot(page, tmp_path, "console.png")

    page.select_option("select[name=domain]", "capsule")
    page.select_option("select[name=verdict]", "anomalous")
    page.click("form[data-testid=filters] button[type=submit]")
    page.wait_for_url("**/?domain=capsule*verdict=anomalous*")
    cards = page.locator("[data-testid=frame-card]")
    flagged = [cards.nth(i).get_attribute("data-frame") for i in range(cards.count())]
    assert flagged and all(name.startswith("capsule-") for name in flagged)
    assert set(flagged) >= {f"capsule-{n:03d}" for n in VARIANT_FRAMES}, flagged  # the variant frames are flagged
    variant_scores = [system.index.get("capsule", "line-1", f"capsule-{n:03d}").score for n in VARIANT_FRAMES]

    page.click(f"[data-testid=frame-card][data-frame=capsule-{VARIANT_FRAMES[0]:03d}]")
    page.wait_for_selector("[data-testid=frame-title]")
    page.wait_for_function("() => [...document.querySelectorAll('.views img')].every(i => i.complete && i.naturalWidth > 0)")
    assert page.locator(".views img").count() == 3  # image, map, overlay all load through the console
    assert page.locator("[data-testid=frame-reference-version]").inner_text().startswith("capsule/v1")
    page.fill("form.action input[name=note]", "new supplier's pattern, within spec")
    page.click("[data-testid=mark-normal]")
    page.wait_for_selector("[data-testid=flash]")
    assert "capsule is now at v2" in page.locator("[data-testid=flash]").inner_text()
    assert "new supplier's pattern" in page.locator("[data-testid=reviews]").inner_text()
    _screenshot(page, tmp_path, "console-frame.png")

    record = system.registry.show("capsule")
    assert (record.version, record.parent_version, record.actor, record.shots) == (2, 1, "victor", 4)
    [review] = system.index.reviews("capsule", "line-1", f"capsule-{VARIANT_FRAMES[0]:03d}")
    assert review.actor == "victor" and review.registry_version == 2

    # The next frame of that product: the replicas re-check current.json every second (INCTRL_BANK_RECHECK_S).
    after = None
    for attempt in range(10):
        time.sleep(1.2)
        frame_id = f"capsule-next-{attempt}"
        system.stream([("capsule", "line-1", frame_id, texture(777 + attempt, stripes=LINES[0][3]))])
        after = system.index.get("capsule", "line-1", frame_id)
        if after.reference_version == "capsule/v2":
            break
    assert after is not None and after.reference_version == "capsule/v2", "the replicas never served capsule/v2"
    assert after.score < min(variant_scores) - 0.02, (after.score, variant_scores)

    page.goto(system.console_url + "/domains/capsule")
    rows = page.locator("[data-testid=version-row]")
    assert [rows.nth(i).get_attribute("data-version") for i in range(rows.count())] == ["2", "1"]
    assert page.locator("[data-testid=activate]").count() == 1  # v1 can be made current again
    page.close()
