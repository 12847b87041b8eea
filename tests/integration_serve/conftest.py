"""A running Serve app (tiny backbone) on the real local stack and a real local Ray, shared by this folder.

The stack fixtures come from tests/integration/conftest.py (loaded by path: conftest files only apply to
their own folder).
"""
from __future__ import annotations

import importlib.util
import io
import os
import shutil
import socket
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model import InCTRLv2, InCTRLv2Config
from services.storage.object_store import ObjectStore
from services.registry.domain_registry import DomainRegistry
from services.settings import ServiceSettings
from inctrl.dev.local_stack import StackEndpoints

_spec = importlib.util.spec_from_file_location(
    "integration_stack_fixtures", Path(__file__).parents[1] / "integration" / "conftest.py"
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

APP_NAME = "inctrl-test"
RECHECK_S = 1.0
MAX_REFERENCES = 6  # below the default, so a test can tell that the environment reached the replicas


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


@dataclass
class ServedApp:
    detector: InCTRLv2
    registry: DomainRegistry
    store: ObjectStore
    settings: ServiceSettings
    http_url: str
    app_name: str


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def served_app(stack_endpoints: StackEndpoints, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedApp]:
    """Ray (8 logical CPUs, own temp dir) + the Serve app over a tiny checkpoint; domains alpha and beta registered."""
    import ray
    from ray import serve

    from services.serving.app import build_app
    from services.serving.deployment_config import deployment_config_from_args

    suffix = uuid.uuid4().hex[:8]
    environment = {
        **stack_endpoints.environment(),
        "INCTRL_RESULTS_BUCKET": f"results-{suffix}",
        "INCTRL_BANK_RECHECK_S": str(RECHECK_S),
        "INCTRL_MAX_REFERENCES": str(MAX_REFERENCES),
    }
    saved = {key: os.environ.get(key) for key in environment}
    os.environ.update(environment)  # Ray workers inherit the environment of the process that starts Ray
    settings = ServiceSettings()
    store = ObjectStore.from_settings(settings)
    detector = InCTRLv2(InCTRLv2Config(backbone="tiny", pretrained=None))
    checkpoint = detector.save(tmp_path_factory.mktemp("checkpoint"))
    registry = DomainRegistry(store, f"s3://models-{suffix}/registry/")
    registry.register("alpha", "capsule", [texture(i, stripes=4) for i in range(3)], detector)
    registry.register("beta", "fabric", [texture(10 + i, stripes=9) for i in range(2)], detector, threshold=0.6)
    ray_dir = tempfile.mkdtemp(prefix="inctrl-ray-", dir="/tmp")  # short: Ray's socket paths are length-limited
    # Logical CPUs, not cores: the Serve replicas stay up for the whole session, and later suites that reuse
    # this Ray (Ray Train's workers and controller) must still find free CPUs or they wait forever.
    ray.init(num_cpus=8, _temp_dir=ray_dir, include_dashboard=False, log_to_driver=False)
    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    args = {
        "checkpoint_uri": str(checkpoint),
        "backbone": "tiny",
        "nn_backend": "faiss",
        "registry_prefix": registry.uri,
        "batch": {"max_batch_size": 8, "batch_wait_timeout_s": 0.05},
        "pool": {"num_replicas": 1, "ray_actor_options": {"num_cpus": 0.5}},
    }
    serve.run(build_app(deployment_config_from_args(args)), name=APP_NAME, route_prefix="/")
    try:
        yield ServedApp(detector, registry, store, settings, f"http://127.0.0.1:{port}", APP_NAME)
    finally:
        serve.shutdown()
        ray.shutdown()
        shutil.rmtree(ray_dir, ignore_errors=True)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
