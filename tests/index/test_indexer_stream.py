"""The indexer end to end against the real local broker (Tansu) and a real database (PostgreSQL, SQLite):
at-least-once, idempotent replays, newest event wins, bad events skipped, drift alerts on the alerts topic,
and a database outage that rolls back and retries without committing offsets."""
from __future__ import annotations

import threading
import time
import urllib.request
from datetime import datetime, timedelta, timezone

import numpy as np
import psycopg
import pytest
from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import make_url

from services.consumer.health import ConsumerHealthServer
from services.index import IndexSettings, InspectionIndex, create_index_engine, upgrade
from services.index.drift import DomainCalibration, DriftAlert, DriftWatch
from services.index.indexer import Indexer
from services.protocol.messages import DeadLetter, DeadLetterReason, InspectionRequest
from services.settings import ServiceSettings

pytestmark = pytest.mark.integration

# Recent capture times: the drift watch follows only lines with frames in the last day.
T0 = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=1)
IDLE_S = 3.0


def send(settings: ServiceSettings, topic: str, values: list[bytes], key: bytes | None = None) -> None:
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    try:
        for value in values:
            producer.send(topic, key=key, value=value)
        producer.flush(timeout=30)
    finally:
        producer.close()


def dead_letter(offset: int) -> DeadLetter:
    payload = InspectionRequest(frame_id=f"bad-{offset}", domain="capsule", line="line-1", timestamp=T0, image=b"junk").to_bytes()
    return DeadLetter(
        reason=DeadLetterReason.UNDECODABLE_IMAGE, detail="cannot identify image file", topic="frames", partition=0,
        offset=offset, payload=payload, payload_size=len(payload), payload_truncated=False, frame_id=f"bad-{offset}",
    )  # fmt: skip


def run_indexer(settings: ServiceSettings, index_settings: IndexSettings, index: InspectionIndex, **kwargs):
    with Indexer(settings, index_settings, index, **kwargs) as indexer:
        stats = indexer.run(idle_timeout_s=IDLE_S)
        assert indexer.database_reachable()
    return stats


def test_indexer_is_idempotent_under_replay_and_skips_bad_events(
    service_settings: ServiceSettings, database_url: str, result_factory, unique_name
) -> None:
    engine = create_index_engine(database_url)
    upgrade(engine)
    index = InspectionIndex(engine)
    results = [result_factory(f"f-{i}", score=0.1 * i, line=f"line-{i % 2}", timestamp=T0 + timedelta(seconds=i)) for i in range(6)]
    reinspected = result_factory("f-0", score=0.95, line="line-0", timestamp=T0, reference_version="capsule/v2")
    key = b"capsule/line"  # one key: one partition, so the offsets order the events as sent
    send(service_settings, service_settings.results_topic, [r.to_bytes() for r in results] + [results[3].to_bytes()], key)
    send(service_settings, service_settings.results_topic, [b"\x00 not json", b'{"frame_id": "f-x"}'], key)
    send(service_settings, service_settings.results_topic, [reinspected.to_bytes()], key)
    send(service_settings, service_settings.dead_letter_topic, [dead_letter(1).to_bytes(), dead_letter(1).to_bytes(), dead_letter(2).to_bytes()])

    settings = IndexSettings(database_url=database_url, consumer_group=unique_name("indexers"), poll_timeout_ms=200)
    stats = run_indexer(service_settings, settings, index)
    assert stats.polled == 13 and stats.bad == 2
    # Six frames and two distinct dead letters are written; f-0's re-inspection too, unless it came in the
    # same poll as f-0's first result (one transaction reduces them to the newer). The duplicate result
    # (later offset, same content) and the duplicate dead letter change nothing.
    assert stats.written + stats.unchanged == 11 and stats.written in (8, 9) and stats.unchanged >= 2
    assert len(index.recent(limit=100)) == 6
    frame = index.get("capsule", "line-0", "f-0")
    assert frame is not None and frame.score == 0.95 and frame.reference_version == "capsule/v2"
    assert [d.offset for d in index.dead_letters()] == [2, 1]
    before = index.recent(limit=100)

    # Same group again: offsets were committed after the transaction, so nothing is redelivered.
    assert run_indexer(service_settings, settings, index).polled == 0
    # A new group replays both topics from the start: at-least-once delivery changes nothing.
    replay = run_indexer(service_settings, settings.model_copy(update={"consumer_group": unique_name("replay")}), index)
    assert replay.polled == 13 and replay.written == 0 and replay.bad == 2
    assert index.recent(limit=100) == before  # indexed_at included: no row was rewritten
    engine.dispose()


def test_indexer_publishes_one_drift_alert_for_a_shifted_line(
    service_settings: ServiceSettings, sqlite_url: str, result_factory, unique_name, read_topic
) -> None:
    engine = create_index_engine(sqlite_url)
    upgrade(engine)
    index = InspectionIndex(engine)
    alerts_topic = unique_name("alerts")
    admin = KafkaAdminClient(bootstrap_servers=service_settings.kafka_bootstrap)
    admin.create_topics([NewTopic(alerts_topic, 1, 1)])
    admin.close()
    rng = np.random.default_rng(5)
    calibration = DomainCalibration(domain="capsule", reference_version="capsule/v1", normal_scores=tuple(rng.beta(2, 8, 60)))
    events = [
        result_factory(f"{line}-{i}", score=float(np.clip(rng.beta(2, 8) + shift, 0, 1)), threshold=0.9, line=line,
                       timestamp=T0 + timedelta(seconds=i)).to_bytes()
        for line, shift in (("calm", 0.0), ("shifted", 0.3))
        for i in range(80)
    ]  # fmt: skip
    send(service_settings, service_settings.results_topic, events)
    settings = IndexSettings(
        database_url=sqlite_url, consumer_group=unique_name("indexers"), alerts_topic=alerts_topic,
        drift_window=80, drift_min_window=40, drift_interval_s=0.5, poll_timeout_ms=200,
    )  # fmt: skip

    class Source:
        def calibrations(self) -> list[DomainCalibration]:
            return [calibration]

    def watch(publish, metrics) -> DriftWatch:
        return DriftWatch(index, Source(), settings, publish, metrics)

    with Indexer(service_settings, settings, index, drift_watch_factory=watch) as indexer, ConsumerHealthServer(
        indexer, indexer.metrics, indexer.database_reachable, 0, 60.0, host="127.0.0.1"  # type: ignore[arg-type]
    ) as health:
        indexer.run(idle_timeout_s=IDLE_S)  # evaluates every 0.5 s while idle: several evaluations
        indexer.watch_drift()
        base = f"http://127.0.0.1:{health.port}"
        with urllib.request.urlopen(f"{base}/readyz", timeout=5) as response:
            assert response.status == 200  # in the group, database reachable
        with urllib.request.urlopen(f"{base}/metrics", timeout=5) as response:
            families = {f.name: f for f in text_string_to_metric_families(response.read().decode())}
    drifting = {s.labels["line"]: s.value for s in families["inctrl_drift_drifting"].samples}
    assert drifting == {"calm": 0.0, "shifted": 1.0}
    lag_series = {(s.labels["group"], s.labels["topic"]) for s in families["inctrl_kafka_consumer_lag"].samples}
    assert (settings.consumer_group, service_settings.results_topic) in lag_series
    assert (service_settings.consumer_group, service_settings.frames_topics[0]) in lag_series
    assert [s.value for s in families["inctrl_index_rows_written"].samples if s.name.endswith("_total") and s.labels["kind"] == "result"] == [160.0]
    alerts = [DriftAlert.from_bytes(value) for value in read_topic(alerts_topic, expected=2, timeout_s=5)]
    assert [(a.domain, a.line) for a in alerts] == [("capsule", "shifted")]
    assert index.drift_status("capsule", "calm").level.value == "ok"
    engine.dispose()


def test_database_outage_is_retried_and_nothing_is_committed_before_it_ends(
    service_settings: ServiceSettings, postgres_url: str, result_factory, unique_name
) -> None:
    engine = create_index_engine(postgres_url)
    upgrade(engine)
    index = InspectionIndex(engine)
    url = make_url(postgres_url)
    admin = psycopg.connect(host=url.host, port=url.port, user=url.username, dbname="postgres", autocommit=True)
    admin.execute(f'ALTER DATABASE "{url.database}" ALLOW_CONNECTIONS false')
    admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (url.database,))
    send(service_settings, service_settings.results_topic, [result_factory(f"f-{i}").to_bytes() for i in range(4)])
    settings = IndexSettings(database_url=postgres_url, consumer_group=unique_name("indexers"), poll_timeout_ms=200)
    with Indexer(service_settings, settings, index) as indexer:
        worker = threading.Thread(target=indexer.run, kwargs={"idle_timeout_s": IDLE_S})
        worker.start()
        deadline = time.monotonic() + 60
        while indexer.stats.retries < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert indexer.stats.retries >= 2 and indexer.stats.written == 0
        assert not indexer.database_reachable()
        admin.execute(f'ALTER DATABASE "{url.database}" ALLOW_CONNECTIONS true')
        worker.join(timeout=90)
        assert not worker.is_alive()
        assert indexer.stats.written == 4
    assert len(index.recent()) == 4
    admin.close()
    engine.dispose()


def test_an_event_the_database_refuses_is_skipped_and_the_rest_of_its_batch_kept(
    service_settings: ServiceSettings, postgres_url: str, result_factory, unique_name
) -> None:
    engine = create_index_engine(postgres_url)
    upgrade(engine)
    index = InspectionIndex(engine)
    too_long = result_factory("f-long").model_copy(update={"model_version": "m" * 5000})  # column is varchar(1024)
    events = [result_factory("f-0"), too_long, result_factory("f-1")]
    send(service_settings, service_settings.results_topic, [event.to_bytes() for event in events], b"capsule/line-1")
    settings = IndexSettings(database_url=postgres_url, consumer_group=unique_name("indexers"), poll_timeout_ms=200)
    stats = run_indexer(service_settings, settings, index)
    assert (stats.written, stats.bad, stats.bad_by_reason) == (2, 1, {"refused_by_database": 1})
    assert sorted(frame.frame_id for frame in index.recent()) == ["f-0", "f-1"]
    assert run_indexer(service_settings, settings, index).polled == 0  # committed: the refused event does not come back
    engine.dispose()
