"""Drift watch: PSI and KS against an independent oracle, and the watch on a real index (PostgreSQL and
SQLite): a shifted score stream raises the gauge and publishes exactly one alert, an unshifted one none."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from scipy import stats

from services.index import DriftLevel, InspectionIndex, IndexSettings
from services.index.drift import DomainCalibration, DriftAlert, DriftWatch
from services.index.drift_statistics import bin_edges, drift_reading, population_stability_index
from services.index.metrics import IndexMetrics

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
RNG_SEED = 7


def calibration_scores(n: int = 60) -> list[float]:
    return np.random.default_rng(RNG_SEED).beta(2, 8, n).tolist()


def test_ks_matches_scipy() -> None:
    rng = np.random.default_rng(1)
    for shift in (0.0, 0.03, 0.1):
        window, reference = rng.beta(2, 8, 150) + shift, rng.beta(2, 8, 40)
        reading = drift_reading(window, reference, bins=10)
        oracle = stats.ks_2samp(window, reference)
        assert reading.ks_statistic == pytest.approx(oracle.statistic, abs=1e-12)
        assert reading.p_value == pytest.approx(oracle.pvalue, abs=0.03)  # asymptotic vs scipy's exact p


def test_psi_by_hand_and_grows_with_the_shift() -> None:
    reference = np.array([0.1, 0.2, 0.3, 0.4])
    edges = bin_edges(reference, bins=10)  # B = min(10, 4) = 4: edges at the 1/4, 2/4, 3/4 quantiles
    assert edges.tolist() == pytest.approx([0.175, 0.25, 0.325])
    window = np.array([0.5, 0.6])  # both in the last bin
    p = np.array([1.5, 1.5, 1.5, 1.5]) / 6.0
    q = np.array([0.5, 0.5, 0.5, 2.5]) / 4.0
    assert population_stability_index(window, reference, edges) == pytest.approx(float(np.sum((q - p) * np.log(q / p))))
    ref = np.random.default_rng(2).beta(2, 8, 80)
    psis = [drift_reading(np.random.default_rng(3).beta(2, 8, 200) + s, ref, 10).psi for s in (0.0, 0.05, 0.1, 0.2)]
    assert psis == sorted(psis) and psis[0] < 0.25 < psis[-1]


class FixedCalibrations:
    def __init__(self, *calibrations: DomainCalibration) -> None:
        self.items = list(calibrations)

    def calibrations(self) -> list[DomainCalibration]:
        return self.items


def stream(index: InspectionIndex, result_factory, scores, line: str = "line-1", start: int = 0, version: str = "capsule/v1") -> None:
    with index.session() as session, session.begin():
        for i, score in enumerate(scores, start):
            index.upsert_result(result_factory(
                f"{line}-{i}", score=float(np.clip(score, 0, 1)), line=line, timestamp=T0 + timedelta(seconds=i),
                reference_version=version, threshold=0.9,
            ), session=session)  # fmt: skip


def gauge(metrics: IndexMetrics, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return None


@pytest.fixture
def watch_parts(index: InspectionIndex):
    settings = IndexSettings(drift_window=100, drift_min_window=30, drift_level=0.25, drift_clear_level=0.1)
    metrics = IndexMetrics()
    alerts: list[DriftAlert] = []
    calibration = DomainCalibration(domain="capsule", reference_version="capsule/v1", normal_scores=tuple(calibration_scores()))
    source = FixedCalibrations(calibration)
    clock = iter(T0 + timedelta(minutes=m) for m in range(1000))
    watch = DriftWatch(index, source, settings, alerts.append, metrics, clock=lambda: next(clock))
    return watch, metrics, alerts, source


def test_shifted_stream_raises_gauge_and_exactly_one_alert(index: InspectionIndex, result_factory, watch_parts) -> None:
    watch, metrics, alerts, _ = watch_parts
    rng = np.random.default_rng(11)
    stream(index, result_factory, rng.beta(2, 8, 100), line="line-1")  # same distribution as calibration
    stream(index, result_factory, rng.beta(2, 8, 100) + 0.25, line="line-2")  # shifted
    for _ in range(3):  # repeated evaluations of a line that stays drifted alert once
        watch.evaluate()
    assert [(a.domain, a.line) for a in alerts] == [("capsule", "line-2")]
    assert alerts[0].psi >= 0.25 and alerts[0].p_value <= 0.01 and alerts[0].window_size == 100
    assert DriftAlert.from_bytes(alerts[0].to_bytes()) == alerts[0]
    shifted_psi = gauge(metrics, "inctrl_drift_psi", domain="capsule", line="line-2")
    assert shifted_psi >= 0.25 and shifted_psi > 3 * gauge(metrics, "inctrl_drift_psi", domain="capsule", line="line-1")
    # The unshifted line's PSI carries sampling noise; KS says it is noise, so it raised nothing.
    assert gauge(metrics, "inctrl_drift_ks_p_value", domain="capsule", line="line-1") > 0.01
    assert gauge(metrics, "inctrl_drift_drifting", domain="capsule", line="line-2") == 1.0
    assert gauge(metrics, "inctrl_drift_drifting", domain="capsule", line="line-1") == 0.0
    assert gauge(metrics, "inctrl_drift_alerts_total", domain="capsule") == 1.0
    drifting, calm = index.drift_status("capsule", "line-2"), index.drift_status("capsule", "line-1")
    assert drifting.level is DriftLevel.DRIFTING and drifting.since == T0  # since the first pass, which crossed
    assert drifting.window_size == 100 and drifting.reference_size == 60 and drifting.statistic == alerts[0].psi
    assert calm.level is DriftLevel.OK


def test_hysteresis_clears_then_a_new_crossing_alerts_again(index: InspectionIndex, result_factory, watch_parts) -> None:
    watch, metrics, alerts, _ = watch_parts
    rng = np.random.default_rng(12)
    stream(index, result_factory, rng.beta(2, 8, 100) + 0.25)
    watch.evaluate()
    stream(index, result_factory, rng.beta(2, 8, 100), start=100)  # back to normal: the window fills with normal scores
    watch.evaluate()
    assert index.drift_status("capsule", "line-1").level is DriftLevel.OK
    stream(index, result_factory, rng.beta(2, 8, 100) + 0.25, start=200)
    watch.evaluate()
    watch.evaluate()
    assert len(alerts) == 2


def test_small_window_is_insufficient_and_new_reference_version_starts_a_new_window(
    index: InspectionIndex, result_factory, watch_parts
) -> None:
    watch, metrics, alerts, source = watch_parts
    stream(index, result_factory, np.full(20, 0.9))  # far off, but only 20 < 30 scores
    (status,) = watch.evaluate()
    assert status.level is DriftLevel.INSUFFICIENT and status.window_size == 20 and alerts == []
    stream(index, result_factory, np.full(50, 0.9), start=20)
    watch.evaluate()
    assert len(alerts) == 1
    # A mark-normal made v2: scores against v1 no longer count, the window is empty again.
    source.items = [DomainCalibration(domain="capsule", reference_version="capsule/v2", normal_scores=tuple(calibration_scores()))]
    (status,) = watch.evaluate()
    assert status.level is DriftLevel.INSUFFICIENT and status.window_size == 0 and status.reference_version == "capsule/v2"


def test_gauges_only_for_registered_domains(index: InspectionIndex, result_factory, watch_parts) -> None:
    watch, metrics, alerts, source = watch_parts
    stream(index, result_factory, np.random.default_rng(13).beta(2, 8, 40))
    index.upsert_result(result_factory("x", domain="unregistered", reference_version="unregistered/v1"))
    watch.evaluate()
    assert gauge(metrics, "inctrl_drift_window_scores", domain="capsule", line="line-1") == 40
    assert gauge(metrics, "inctrl_drift_window_scores", domain="unregistered", line="line-1") is None
    source.items = []  # capsule deleted from the registry: its series go
    watch.evaluate()
    assert gauge(metrics, "inctrl_drift_window_scores", domain="capsule", line="line-1") is None


def test_lines_without_recent_frames_are_no_longer_watched(index: InspectionIndex, result_factory) -> None:
    stream(index, result_factory, np.random.default_rng(14).beta(2, 8, 40))
    metrics = IndexMetrics()
    calibration = DomainCalibration(domain="capsule", reference_version="capsule/v1", normal_scores=tuple(calibration_scores()))
    settings = IndexSettings(drift_min_window=30, drift_line_active_s=3600)
    now = [T0 + timedelta(minutes=30)]
    watch = DriftWatch(index, FixedCalibrations(calibration), settings, lambda alert: None, metrics, clock=lambda: now[0])
    assert [s.line for s in watch.evaluate()] == ["line-1"]
    assert gauge(metrics, "inctrl_drift_window_scores", domain="capsule", line="line-1") == 40
    now[0] = T0 + timedelta(hours=2)  # the line's last frame is older than drift_line_active_s
    assert watch.evaluate() == []
    assert gauge(metrics, "inctrl_drift_window_scores", domain="capsule", line="line-1") is None


def test_an_alert_that_could_not_be_published_is_published_on_the_next_pass(index: InspectionIndex, result_factory) -> None:
    stream(index, result_factory, np.random.default_rng(15).beta(2, 8, 60) + 0.3)
    published: list[DriftAlert] = []
    failures = [RuntimeError("broker unreachable")]

    def publish(alert: DriftAlert) -> None:
        if failures:
            raise failures.pop()
        published.append(alert)

    calibration = DomainCalibration(domain="capsule", reference_version="capsule/v1", normal_scores=tuple(calibration_scores()))
    settings = IndexSettings(drift_min_window=30)
    watch = DriftWatch(index, FixedCalibrations(calibration), settings, publish, IndexMetrics(), clock=lambda: T0)
    with pytest.raises(RuntimeError, match="broker unreachable"):
        watch.evaluate()
    assert index.drift_status("capsule", "line-1") is None  # not stored as drifting: nothing was sent
    watch.evaluate()
    watch.evaluate()
    assert len(published) == 1 and index.drift_status("capsule", "line-1").level is DriftLevel.DRIFTING
