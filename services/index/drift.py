"""Drift watch: per (domain, line), the recent score window against the domain's calibration scores.

Every `drift_interval_s` the watch reads, for each registered domain with at least drift_min_reference
calibration scores (DomainRecord.calibration.normal_scores of the current version), the last
drift_window scores of each line with a frame in the last drift_line_active_s, scored against that same reference version
(a new version, e.g. after a mark-normal, starts a fresh window), and computes PSI and the two-sample KS
test (services/index/drift_statistics.py, formulas there).

States and hysteresis, per (domain, line), kept in the index's drift_status table (so a restart neither
repeats nor forgets an alert):

    insufficient  fewer than drift_min_window scores in the window: no statement, no alert
    ok -> drifting    when PSI >= drift_level and KS p <= drift_alpha: one DriftAlert on the alerts topic
    drifting -> ok    when PSI < drift_clear_level or KS p > drift_clear_alpha
    (in between the state stays as it was: a line hovering at the level does not alert repeatedly)

The alert is published before the state is stored: if publishing fails, the next evaluation tries again.
Run the watch in one indexer replica (INCTRL_INDEX_DRIFT_WATCH): it is the one that publishes.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Literal, Protocol

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from services.index.drift_statistics import DriftReading, drift_reading
from services.index.metrics import IndexMetrics
from services.index.repository import DriftLevel, DriftStatus, InspectionIndex
from services.index.settings import IndexSettings
from services.protocol.messages import NAME_PATTERN, _Message

logger = logging.getLogger(__name__)


class DriftAlert(_Message):
    """Published on the alerts topic once each time a (domain, line) crosses into drift."""

    schema_version: Literal[1] = 1
    kind: Literal["drift"] = "drift"
    domain: str = Field(pattern=NAME_PATTERN)
    line: str = Field(pattern=NAME_PATTERN)
    psi: float = Field(ge=0.0, description="PSI of the window against the calibration scores.")
    level: float = Field(description="The PSI alert level that was crossed.")
    ks_statistic: float = Field(ge=0.0, le=1.0)
    p_value: float = Field(ge=0.0, le=1.0, description="Two-sample KS p-value.")
    window_size: int = Field(ge=1)
    reference_size: int = Field(ge=1)
    reference_version: str
    raised_at: AwareDatetime


class DomainCalibration(BaseModel):
    """What the watch compares a domain's windows against."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    domain: str
    reference_version: str
    normal_scores: tuple[float, ...]


class CalibrationSource(Protocol):
    """The registered domains and their calibration scores (the registry, in production)."""

    def calibrations(self) -> list[DomainCalibration]: ...


class RegistryCalibrations:
    """CalibrationSource over a DomainRegistry, re-read at most every refresh_s seconds."""

    def __init__(self, registry: object, refresh_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._registry = registry
        self._refresh_s = refresh_s
        self._clock = clock
        self._cached: list[DomainCalibration] | None = None
        self._read_at = 0.0

    def calibrations(self) -> list[DomainCalibration]:
        if self._cached is None or self._clock() - self._read_at >= self._refresh_s:
            records = self._registry.list()  # type: ignore[attr-defined]
            self._cached = [
                DomainCalibration(
                    domain=record.name, reference_version=record.reference_version,
                    normal_scores=tuple(record.calibration.normal_scores),
                )  # fmt: skip
                for record in records
            ]
            self._read_at = self._clock()
        return self._cached


class DriftWatch:
    """Evaluates every watched (domain, line), updates the gauges and drift_status, publishes alerts."""

    def __init__(
        self,
        index: InspectionIndex,
        calibrations: CalibrationSource,
        settings: IndexSettings,
        publish: Callable[[DriftAlert], None],
        metrics: IndexMetrics,
        clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
    ) -> None:
        self._index = index
        self._calibrations = calibrations
        self._settings = settings
        self._publish = publish
        self._metrics = metrics
        self._clock = clock

    def evaluate(self) -> list[DriftStatus]:
        """One pass over every watched line; returns their new statuses."""
        statuses: list[DriftStatus] = []
        watched: set[tuple[str, str]] = set()
        now = self._clock()
        active_since = now - timedelta(seconds=self._settings.drift_line_active_s)
        for calibration in self._calibrations.calibrations():
            if len(calibration.normal_scores) < self._settings.drift_min_reference:
                continue
            lines = [line for _, line in self._index.lines(calibration.domain, since=active_since)]
            if len(lines) > self._settings.drift_max_lines:
                logger.warning(
                    "domain has more lines than the drift watch follows; the rest are not watched",
                    extra={"domain": calibration.domain, "lines": len(lines), "drift_max_lines": self._settings.drift_max_lines},
                )  # fmt: skip
                lines = lines[: self._settings.drift_max_lines]
            previous = {status.line: status for status in self._index.drift_statuses(calibration.domain)}
            unchanged_level: list[DriftStatus] = []
            for line in lines:
                status, raised = self._evaluate_line(calibration, line, previous.get(line), now)
                if raised:  # stored at once: a later failure in this pass must not make it alert again
                    self._index.set_drift_status(status)
                else:
                    unchanged_level.append(status)
                statuses.append(status)
                watched.add((calibration.domain, line))
            with self._index.session() as session, session.begin():  # one transaction for the domain's lines
                for status in unchanged_level:
                    self._index.set_drift_status(status, session=session)
        self._metrics.forget_drift_labels(watched)
        return statuses

    def _evaluate_line(
        self, calibration: DomainCalibration, line: str, previous: DriftStatus | None, now: datetime
    ) -> tuple[DriftStatus, bool]:
        """The line's new status, and whether it crossed into drift (its alert then published)."""
        settings = self._settings
        window = self._index.scores(
            calibration.domain, line, limit=settings.drift_window, reference_version=calibration.reference_version
        )
        reading = drift_reading(window, calibration.normal_scores, settings.drift_bins) if window else None
        level = self._next_level(previous.level if previous else None, reading, len(window))
        raised = level is DriftLevel.DRIFTING and (previous is None or previous.level is not DriftLevel.DRIFTING)
        if raised:
            assert reading is not None
            self._raise(calibration, line, reading, now)
        since = previous.since if previous is not None and previous.level is level else now
        status = DriftStatus(
            domain=calibration.domain, line=line, level=level,
            statistic=reading.psi if reading else None, p_value=reading.p_value if reading else None,
            window_size=len(window), reference_size=len(calibration.normal_scores),
            reference_version=calibration.reference_version, since=since, updated_at=now,
        )  # fmt: skip
        labels = (calibration.domain, line)
        self._metrics.drift_window.labels(*labels).set(len(window))
        self._metrics.drifting.labels(*labels).set(1.0 if level is DriftLevel.DRIFTING else 0.0)
        if reading is not None:
            self._metrics.drift_psi.labels(*labels).set(reading.psi)
            self._metrics.drift_ks_p_value.labels(*labels).set(reading.p_value)
        return status, raised

    def _next_level(self, previous: DriftLevel | None, reading: DriftReading | None, size: int) -> DriftLevel:
        s = self._settings
        if reading is None or size < s.drift_min_window:
            return DriftLevel.INSUFFICIENT
        if previous is DriftLevel.DRIFTING:
            cleared = reading.psi < s.drift_clear_level or reading.p_value > s.drift_clear_alpha
            return DriftLevel.OK if cleared else DriftLevel.DRIFTING
        crossed = reading.psi >= s.drift_level and reading.p_value <= s.drift_alpha
        return DriftLevel.DRIFTING if crossed else DriftLevel.OK

    def _raise(self, calibration: DomainCalibration, line: str, reading: DriftReading, now: datetime) -> None:
        alert = DriftAlert(
            domain=calibration.domain, line=line, psi=reading.psi, level=self._settings.drift_level,
            ks_statistic=reading.ks_statistic, p_value=reading.p_value, window_size=reading.window_size,
            reference_size=reading.reference_size, reference_version=calibration.reference_version, raised_at=now,
        )  # fmt: skip
        self._publish(alert)
        self._metrics.drift_alerts.labels(calibration.domain).inc()
        logger.warning(
            "drift alert",
            extra={"domain": alert.domain, "line": line, "psi": round(alert.psi, 4), "p_value": alert.p_value,
                   "window": alert.window_size, "reference_version": alert.reference_version},
        )  # fmt: skip
