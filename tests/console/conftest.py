"""Fixtures of the console tests: the real local stack (loaded by path from tests/integration), a tiny
detector, a registry and results in SeaweedFS, a SQLite index, and the review service over all of them.

`ConsoleWorld.inspect(...)` scores a frame in-process against the domain's current bank and leaves what the
consumer leaves (map.png, overlay.jpg, result.json via services.results.writer) plus the original image in
the frames bucket where the producer uploads frames sent by reference; then indexes the result.
"""
from __future__ import annotations

import importlib.util
import io
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from model import InCTRLv2, InCTRLv2Config
from services.auth import Scope, TokenAuthority, TokenGrant
from services.console.app import ConsoleServices, create_console_app
from services.console.labelled import LabelledExamples
from services.console.originals import OriginalImages
from services.console.review import ReviewService
from services.console.settings import ConsoleSettings
from services.index import IndexedFrame, InspectionIndex, create_index_engine, upgrade
from services.protocol.outcomes import Scored
from services.protocol.messages import InspectionRequest
from services.storage.object_store import ObjectStore
from services.registry.domain_registry import DomainRegistry
from services.results.writer import write_result
from inctrl.dev.local_stack import StackEndpoints

_spec = importlib.util.spec_from_file_location(
    "console_stack_fixtures", Path(__file__).parents[1] / "integration" / "conftest.py"
)
assert _spec is not None and _spec.loader is not None
_stack_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_stack_fixtures)
local_stack = _stack_fixtures.local_stack
stack_endpoints = _stack_fixtures.stack_endpoints
kafka_bootstrap = _stack_fixtures.kafka_bootstrap
unique_name = _stack_fixtures.unique_name
service_settings = _stack_fixtures.service_settings
read_topic = _stack_fixtures.read_topic
create_topics = _stack_fixtures.create_topics
store_for = _stack_fixtures.store_for

READER_TOKEN = "reader-token-0123456789"
REVIEWER_TOKEN = "reviewer-token-0123456789"
INSPECTOR_TOKEN = "inspector-token-0123456789"
GRANTS = {
    READER_TOKEN: TokenGrant(subject="rita", scopes=frozenset({Scope.READ})),
    REVIEWER_TOKEN: TokenGrant(subject="victor", scopes=frozenset({Scope.REVIEW})),
    INSPECTOR_TOKEN: TokenGrant(subject="camera-7", scopes=frozenset({Scope.INSPECT})),
}


def texture(seed: int, size: tuple[int, int] = (64, 64), stripes: int = 4) -> np.ndarray:
    """(3, H, W) float32: a striped pattern with noise, distinct per `stripes`, varying per seed."""
    rng = np.random.default_rng(seed)
    h, w = size
    base = 0.5 + 0.3 * np.sin(np.linspace(0, stripes * np.pi, w))[None, :].repeat(h, 0)
    image = np.stack([base, base * 0.8, 1 - base]) + rng.normal(0, 0.03, (3, h, w))
    return np.clip(image, 0, 1).astype(np.float32)


def png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.round(image.transpose(1, 2, 0) * 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="session")
def tiny_detector() -> InCTRLv2:
    return InCTRLv2(InCTRLv2Config(backbone="tiny", pretrained=None))


@dataclass
class ConsoleWorld:
    """Everything a console test touches, on the real stack."""

    store: ObjectStore
    registry: DomainRegistry
    index: InspectionIndex
    review: ReviewService
    originals: OriginalImages
    examples: LabelledExamples
    detector: InCTRLv2
    results_bucket: str
    frames_bucket: str
    settings: ConsoleSettings
    index_url: str
    clock_start: datetime = field(default_factory=lambda: datetime(2026, 12, 1, 8, 0, tzinfo=timezone.utc))

    def inspect(
        self, domain: str, line: str, frame_id: str, image: np.ndarray, minutes: float = 0.0, keep_original: bool = True
    ) -> IndexedFrame:
        """Score against the current bank, write the result objects and the original, index the result."""
        registered = self.registry.load(domain)
        out = self.detector.detect(torch.from_numpy(image)[None], registered.bank)
        timestamp = self.clock_start + timedelta(minutes=minutes)
        request = InspectionRequest(frame_id=frame_id, domain=domain, line=line, timestamp=timestamp, image=png_bytes(image))
        outcome = Scored(
            score=float(out.scores[0]), anomaly_map=out.maps[0].numpy(), threshold=registered.record.threshold,
            model_version="tiny@test", reference_version=registered.record.reference_version,
        )  # fmt: skip
        result = write_result(request, image, outcome, 0.0, self.results_bucket, self.store)
        if keep_original:
            day = timestamp.strftime("%Y-%m-%d")
            self.store.put_bytes(self.frames_bucket, f"frames/{domain}/{line}/{day}/{frame_id}.png", png_bytes(image))
        self.index.upsert_result(result)
        frame = self.index.get(domain, line, frame_id)
        assert frame is not None
        return frame

    def app(self, authority: TokenAuthority | None = None):  # noqa: ANN201 - a FastAPI app
        return create_console_app(
            ConsoleServices(
                review=self.review, originals=self.originals, store=self.store,
                authority=authority or TokenAuthority(GRANTS), settings=self.settings,
            )  # fmt: skip
        )


@pytest.fixture
def console_world(
    stack_endpoints: StackEndpoints, tmp_path: Path, tiny_detector: InCTRLv2, unique_name: Callable[[str], str]
) -> ConsoleWorld:
    """Fresh buckets, registry and index; domain "capsule" (K=3, calibrated) and "fabric" (threshold 0.6)."""
    store = store_for(stack_endpoints)
    suffix = uuid.uuid4().hex[:8]
    results_bucket, frames_bucket = f"results-{suffix}", f"frames-{suffix}"
    for bucket in (results_bucket, frames_bucket):
        store.ensure_bucket(bucket)
    registry = DomainRegistry(store, f"s3://models-{suffix}/registry/")
    registry.register("capsule", "capsule", [texture(i, stripes=4) for i in range(3)], tiny_detector, actor="setup")
    registry.register("fabric", "fabric", [texture(10 + i, stripes=9) for i in range(2)], tiny_detector, threshold=0.6, actor="setup")
    index_url = f"sqlite:///{tmp_path / 'index.sqlite3'}"
    engine = create_index_engine(index_url)
    upgrade(engine)
    index = InspectionIndex(engine)
    settings = ConsoleSettings(labelled_prefix=f"s3://models-{suffix}/labelled/")
    originals = OriginalImages(store, frames_bucket)
    examples = LabelledExamples(store, settings.labelled_prefix)
    review = ReviewService(index, registry, store, originals, examples, detector=lambda: tiny_detector)
    return ConsoleWorld(
        store, registry, index, review, originals, examples, tiny_detector, results_bucket, frames_bucket, settings, index_url
    )
