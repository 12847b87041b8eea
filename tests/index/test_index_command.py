"""`inctrl index` end to end on the real local stack: a domain registered in the real registry (tiny
detector), result events on the broker, the command migrating a fresh database, indexing, reading the
domain's calibration scores from the registry, and publishing one drift alert for the shifted line."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic
from typer.testing import CliRunner

from inctrl.cli import app
from model import InCTRLv2, InCTRLv2Config
from services.index import DriftLevel, InspectionIndex, create_index_engine
from services.index.drift import DriftAlert, RegistryCalibrations
from services.storage.object_store import ObjectStore
from services.registry.domain_registry import DomainRegistry
from services.settings import ServiceSettings

pytestmark = pytest.mark.integration

# Recent capture times: the drift watch follows only lines with frames in the last day.
T0 = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=1)


def texture(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = 0.5 + 0.3 * np.sin(np.linspace(0, 4 * np.pi, 64))[None, :].repeat(64, 0)
    return np.clip(np.stack([base, base * 0.8, 1 - base]) + rng.normal(0, 0.03, (3, 64, 64)), 0, 1).astype(np.float32)


def test_index_command_indexes_and_alerts_on_a_drifting_line(
    service_settings: ServiceSettings, unique_name, read_topic, tmp_path, monkeypatch, result_factory
) -> None:
    store = ObjectStore.from_settings(service_settings)
    bucket = unique_name("models")
    store.ensure_bucket(bucket)
    registry = DomainRegistry(store, f"s3://{bucket}/registry/")
    detector = InCTRLv2(InCTRLv2Config(backbone="tiny", pretrained=None))
    record = registry.register(
        "capsule", "capsule", [texture(i) for i in range(2)], detector, calibration_images=[texture(100 + i) for i in range(24)]
    )
    normal = np.asarray(record.calibration.normal_scores)
    assert len(normal) == 24
    (calibration,) = RegistryCalibrations(registry, refresh_s=60).calibrations()
    assert calibration.reference_version == record.reference_version and calibration.normal_scores == tuple(normal)

    rng = np.random.default_rng(3)
    spread = max(float(normal.std()), 1e-3)
    calm = rng.choice(normal, 60) + rng.normal(0, spread / 10, 60)
    shifted = normal.max() + 5 * spread + rng.uniform(0, spread, 60)
    events = [
        result_factory(f"{line}-{i}", score=float(np.clip(score, 0, 1)), threshold=1.0, line=line,
                       timestamp=T0 + timedelta(seconds=i), reference_version=record.reference_version).to_bytes()
        for line, scores in (("calm", calm), ("shifted", shifted))
        for i, score in enumerate(scores)
    ]  # fmt: skip
    producer = KafkaProducer(bootstrap_servers=service_settings.kafka_bootstrap, acks="all")
    for event in events:
        producer.send(service_settings.results_topic, value=event)
    producer.send(service_settings.results_topic, value=b"{broken")
    producer.flush(timeout=30)
    producer.close()
    alerts_topic = unique_name("alerts")
    admin = KafkaAdminClient(bootstrap_servers=service_settings.kafka_bootstrap)
    admin.create_topics([NewTopic(alerts_topic, 1, 1)])
    admin.close()

    for name, value in service_settings.to_environment().items():
        monkeypatch.setenv(name, value)
    database = tmp_path / "nested" / "index.sqlite3"
    environment = {
        "INCTRL_REGISTRY_PREFIX": f"s3://{bucket}/registry/", "INCTRL_INDEX_ALERTS_TOPIC": alerts_topic,
        "INCTRL_INDEX_CONSUMER_GROUP": unique_name("indexers"), "INCTRL_INDEX_METRICS_PORT": "0",
        "INCTRL_INDEX_DRIFT_WINDOW": "60", "INCTRL_INDEX_DRIFT_MIN_WINDOW": "30", "INCTRL_INDEX_DRIFT_INTERVAL_S": "0.5",
        "INCTRL_INDEX_POLL_TIMEOUT_MS": "200",
    }  # fmt: skip
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    outcome = CliRunner().invoke(app, ["index", "--database-url", f"sqlite:///{database}", "--idle-timeout-s", "4"])
    assert outcome.exit_code == 0, outcome.output
    stats = json.loads(outcome.output.strip().splitlines()[-1])
    assert stats["written"] == 120 and stats["bad"] == 1 and stats["alerts"] == 1

    index = InspectionIndex(create_index_engine(f"sqlite:///{database}"))
    assert len(index.recent(limit=500)) == 120
    assert index.drift_status("capsule", "shifted").level is DriftLevel.DRIFTING
    assert index.drift_status("capsule", "calm").level is DriftLevel.OK
    alerts = [DriftAlert.from_bytes(value) for value in read_topic(alerts_topic, expected=2, timeout_s=5)]
    assert [(a.line, a.reference_version, a.reference_size) for a in alerts] == [("shifted", record.reference_version, 24)]
