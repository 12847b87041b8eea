"""InspectionIndex: the repository the indexer writes and the console reads (SQLite or PostgreSQL).

Idempotence (at-least-once delivery upstream): every write is one atomic INSERT ... ON CONFLICT statement,
so a replayed or duplicate event changes nothing and two indexers racing on one frame cannot both insert.

    frames        key (domain, line, frame_id). An event replaces the stored row only when it differs
                  (SHA-256 of its JSON: a duplicate sent twice, at any offset, changes nothing) and is newer:
                  (timestamp, event_offset) strictly greater, with a missing offset counting as -1. The
                  offset is the event's position on the results topic; results of one (domain, line)
                  share a topic key, hence a partition, so a re-inspection of a frame always lands after
                  the earlier result. A replay of an older event (lower offset) therefore loses.
    dead_letters  key (topic, partition, offset) of the frame message that failed: first write wins.
    reviews       append-only.
    drift_status  key (domain, line): the drift watch's latest reading.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from enum import StrEnum
from typing import Any, NamedTuple

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from sqlalchemy import Engine, Select, and_, func, insert, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from services.index.models import DeadLetterRow, DriftStatusRow, FrameRow, ReviewRow
from services.protocol.messages import DeadLetter, DeadLetterReason, InspectionResult, MapStatistics, Verdict


class EventPosition(NamedTuple):
    """Where an event was read: topic partition and offset (orders events of one frame)."""

    partition: int
    offset: int


class FrameFilter(BaseModel):
    """Which frames recent() returns; every field narrows, None means any."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    domain: str | None = None
    line: str | None = None
    verdict: Verdict | None = None
    since: AwareDatetime | None = Field(None, description="Capture time at or after this.")
    until: AwareDatetime | None = Field(None, description="Capture time strictly before this.")


class IndexedFrame(BaseModel):
    """One indexed frame (a row of `frames`): the latest result event for (domain, line, frame_id)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    domain: str
    line: str
    frame_id: str
    timestamp: AwareDatetime
    score: float
    threshold: float
    verdict: Verdict
    bucket: str
    result_key: str
    map_key: str
    overlay_key: str
    model_version: str
    reference_version: str
    latency_ms: float
    map_statistics: MapStatistics
    indexed_at: AwareDatetime


class IndexedDeadLetter(BaseModel):
    """One indexed dead letter (a row of `dead_letters`); the payload itself stays on the dead-letter topic."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    topic: str
    partition: int
    offset: int
    reason: DeadLetterReason
    detail: str
    frame_id: str | None
    domain: str | None
    line: str | None
    key: str | None
    payload_size: int
    payload_truncated: bool
    failed_at: AwareDatetime
    indexed_at: AwareDatetime


class ReviewAction(StrEnum):
    """What an operator decided about a frame."""

    MARK_NORMAL = "mark_normal"
    CONFIRM_DEFECT = "confirm_defect"


class Review(BaseModel):
    """An operator's review of one frame, with who, when and what it produced."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    domain: str
    line: str
    frame_id: str
    action: ReviewAction
    actor: str = Field(min_length=1)
    note: str | None = None
    registry_version: int | None = Field(None, description="The domain version a mark-normal created.")
    example_uri: str | None = Field(None, description="Where a confirmed defect was stored (s3:// prefix).")
    created_at: AwareDatetime = Field(default_factory=lambda: datetime.now(timezone.utc))


class DriftLevel(StrEnum):
    """Drift status of one (domain, line)."""

    OK = "ok"
    DRIFTING = "drifting"
    INSUFFICIENT = "insufficient"  # fewer scores in the window than the minimum; no statement made


class DriftStatus(BaseModel):
    """The drift watch's latest reading for one (domain, line), as the console shows it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    domain: str
    line: str
    level: DriftLevel
    statistic: float | None = Field(description="PSI of the window against the calibration scores.")
    p_value: float | None = Field(None, description="Two-sample KS p-value (reported, not the alert criterion).")
    window_size: int = Field(ge=0)
    reference_size: int = Field(ge=0)
    reference_version: str | None = None
    since: AwareDatetime = Field(description="When the current level began.")
    updated_at: AwareDatetime


def _upsert_statement(engine: Engine) -> Callable[..., Any]:
    """The dialect's INSERT supporting ON CONFLICT (SQLite and PostgreSQL share the API)."""
    name = engine.dialect.name
    if name == "postgresql":
        return postgresql.insert
    if name == "sqlite":
        return sqlite.insert
    raise ValueError(f"inspection index supports sqlite and postgresql databases, not {name!r}")


def _payload_field(payload: bytes, name: str) -> str | None:
    """A string field of a dead letter's original JSON payload, when it parses that far."""
    try:
        document = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    value = document.get(name) if isinstance(document, dict) else None
    return value if isinstance(value, str) and len(value) <= 256 else None


class InspectionIndex:
    """Reads and idempotent writes of the index tables on one SQLAlchemy engine.

    Create the schema with services.index.migrate.upgrade(engine) first (the indexer does so on start).
    """

    def __init__(self, engine: Engine, clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:
        self.engine = engine
        self._insert = _upsert_statement(engine)
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._clock = clock
        # Built once: building an ON CONFLICT statement costs more than executing it.
        self._frame_upsert = self._frame_upsert_statement()
        self._drift_upsert = self._drift_upsert_statement()
        self._dead_letter_insert = (
            self._insert(DeadLetterRow.__table__)
            .on_conflict_do_nothing(index_elements=["topic", "partition", "offset"])
            .returning(DeadLetterRow.__table__.c.id)
        )

    def _drift_upsert_statement(self) -> Any:
        table = DriftStatusRow.__table__
        statement = self._insert(table)
        key = {"id", "domain", "line"}
        return statement.on_conflict_do_update(
            index_elements=["domain", "line"],
            set_={column.name: statement.excluded[column.name] for column in table.columns if column.name not in key},
        )

    def _frame_upsert_statement(self) -> Any:
        table = FrameRow.__table__
        statement = self._insert(table)
        stored, incoming = table.c, statement.excluded
        newer = and_(
            incoming.event_digest != stored.event_digest,
            or_(
                incoming.timestamp > stored.timestamp,
                and_(
                    incoming.timestamp == stored.timestamp,
                    func.coalesce(incoming.event_offset, -1) > func.coalesce(stored.event_offset, -1),
                ),
            ),
        )
        key = {"id", "domain", "line", "frame_id"}
        updated = {column.name: incoming[column.name] for column in table.columns if column.name not in key}
        return statement.on_conflict_do_update(
            index_elements=["domain", "line", "frame_id"], set_=updated, where=newer
        ).returning(table.c.id)

    def session(self) -> Session:
        """A new session; `with index.session() as s, s.begin():` groups writes into one transaction."""
        return self._sessions()

    # ---- writes -------------------------------------------------------------------------------------

    def upsert_result(
        self, result: InspectionResult, position: EventPosition | None = None, session: Session | None = None
    ) -> bool:
        """Insert the frame or replace it with a newer event; True when the row changed."""
        return self._changed(self._frame_upsert, _frame_values(result, position, self._clock()), session)

    def upsert_results(
        self, events: Sequence[tuple[InspectionResult, EventPosition | None]], session: Session | None = None
    ) -> int:
        """upsert_result for many events in one statement execution; returns how many rows changed.

        Events of one frame within the batch are reduced to the newest first (one statement may not touch
        a row twice on PostgreSQL); the superseded ones count as unchanged.
        """
        now = self._clock()
        newest: dict[tuple[str, str, str], dict[str, Any]] = {}
        for result, position in events:
            values = _frame_values(result, position, now)
            key = (result.domain, result.line, result.frame_id)
            held = newest.get(key)
            if held is None or _event_order(values) >= _event_order(held):
                newest[key] = values
        return self._changed_many(self._frame_upsert, list(newest.values()), session)

    def upsert_dead_letters(self, dead_letters: Sequence[DeadLetter], session: Session | None = None) -> int:
        """upsert_dead_letter for many in one statement execution; returns how many were inserted."""
        now = self._clock()
        unique = {(d.topic, d.partition, d.offset): _dead_letter_values(d, now) for d in reversed(dead_letters)}
        return self._changed_many(self._dead_letter_insert, list(unique.values()), session)

    def upsert_dead_letter(self, dead_letter: DeadLetter, session: Session | None = None) -> bool:
        """Insert the dead letter unless its frame message is already indexed; True when inserted."""
        return self._changed(self._dead_letter_insert, _dead_letter_values(dead_letter, self._clock()), session)

    def record_review(self, review: Review, session: Session | None = None) -> Review:
        """Append a review; returns it as stored."""
        self._execute(insert(ReviewRow).values(**review.model_dump(mode="python")), session)
        return review

    def set_drift_status(self, status: DriftStatus, session: Session | None = None) -> None:
        """Store the latest drift reading of (domain, line)."""
        values = status.model_dump(mode="python")
        if session is not None:
            session.execute(self._drift_upsert, values)
            return
        with self._sessions() as own, own.begin():
            own.execute(self._drift_upsert, values)

    def _execute(self, statement: Any, session: Session | None) -> None:
        if session is not None:
            session.execute(statement)
            return
        with self._sessions() as own, own.begin():
            own.execute(statement)

    def _changed_many(self, statement: Any, rows: list[dict[str, Any]], session: Session | None) -> int:
        if not rows:
            return 0
        if session is not None:
            return len(session.execute(statement, rows).all())
        with self._sessions() as own, own.begin():
            return len(own.execute(statement, rows).all())

    def _changed(self, statement: Any, values: dict[str, Any], session: Session | None) -> bool:
        """Run an INSERT ... ON CONFLICT ... RETURNING; True when it wrote a row.

        RETURNING rather than rowcount: psycopg reports no rowcount for these statements.
        """
        if session is not None:
            return session.execute(statement, values).first() is not None
        with self._sessions() as own, own.begin():
            return own.execute(statement, values).first() is not None

    # ---- reads --------------------------------------------------------------------------------------

    def recent(self, frame_filter: FrameFilter = FrameFilter(), limit: int = 100) -> list[IndexedFrame]:
        """Frames matching the filter, newest capture first, at most `limit`."""
        query = _filtered(_frame_columns(), frame_filter).order_by(FrameRow.timestamp.desc(), FrameRow.id.desc())
        with self._sessions() as session:
            return [_frame_view(row) for row in session.execute(query.limit(limit))]

    def get(self, domain: str, line: str, frame_id: str) -> IndexedFrame | None:
        """The frame, or None when it is not indexed."""
        query = _frame_columns().where(FrameRow.domain == domain, FrameRow.line == line, FrameRow.frame_id == frame_id)
        with self._sessions() as session:
            row = session.execute(query).one_or_none()
            return None if row is None else _frame_view(row)

    def scores(
        self,
        domain: str,
        line: str | None = None,
        since: datetime | None = None,
        limit: int | None = None,
        reference_version: str | None = None,
    ) -> list[float]:
        """Image scores of a domain (optionally one line, captured at or after `since`), oldest first.

        With `limit`, the most recent `limit` scores (still oldest first): the drift watch's window, which
        also passes `reference_version` (only scores taken against that version's references).
        """
        query = select(FrameRow.__table__.c.score).where(FrameRow.domain == domain)
        if line is not None:
            query = query.where(FrameRow.line == line)
        if reference_version is not None:
            query = query.where(FrameRow.reference_version == reference_version)
        if since is not None:
            query = query.where(FrameRow.timestamp >= since)
        query = query.order_by(FrameRow.timestamp.desc(), FrameRow.id.desc())
        if limit is not None:
            query = query.limit(limit)
        with self._sessions() as session:
            return [score for (score,) in reversed(session.execute(query).all())]

    def lines(self, domain: str | None = None, since: datetime | None = None) -> list[tuple[str, str]]:
        """Every (domain, line) with indexed frames (captured at or after `since`), sorted."""
        query = select(FrameRow.domain, FrameRow.line).distinct().order_by(FrameRow.domain, FrameRow.line)
        if domain is not None:
            query = query.where(FrameRow.domain == domain)
        if since is not None:
            query = query.where(FrameRow.timestamp >= since)
        with self._sessions() as session:
            return [(row.domain, row.line) for row in session.execute(query)]

    def dead_letters(self, frame_filter: FrameFilter = FrameFilter(), limit: int = 100) -> list[IndexedDeadLetter]:
        """Dead letters matching domain, line and failure time (since/until; verdict is ignored), newest first."""
        query = select(DeadLetterRow)
        if frame_filter.domain is not None:
            query = query.where(DeadLetterRow.domain == frame_filter.domain)
        if frame_filter.line is not None:
            query = query.where(DeadLetterRow.line == frame_filter.line)
        if frame_filter.since is not None:
            query = query.where(DeadLetterRow.failed_at >= frame_filter.since)
        if frame_filter.until is not None:
            query = query.where(DeadLetterRow.failed_at < frame_filter.until)
        query = query.order_by(DeadLetterRow.failed_at.desc(), DeadLetterRow.id.desc()).limit(limit)
        with self._sessions() as session:
            return [IndexedDeadLetter.model_validate(row, from_attributes=True) for row in session.scalars(query)]

    def reviews(
        self, domain: str | None = None, line: str | None = None, frame_id: str | None = None, limit: int = 100
    ) -> list[Review]:
        """Reviews, newest first, narrowed by domain, line and frame id."""
        query = select(ReviewRow)
        for column, value in ((ReviewRow.domain, domain), (ReviewRow.line, line), (ReviewRow.frame_id, frame_id)):
            if value is not None:
                query = query.where(column == value)
        query = query.order_by(ReviewRow.created_at.desc(), ReviewRow.id.desc()).limit(limit)
        with self._sessions() as session:
            return [Review.model_validate(row, from_attributes=True) for row in session.scalars(query)]

    def drift_status(self, domain: str, line: str) -> DriftStatus | None:
        """The latest drift reading of (domain, line), or None before the watch has looked at it."""
        query = select(DriftStatusRow).where(DriftStatusRow.domain == domain, DriftStatusRow.line == line)
        with self._sessions() as session:
            row = session.scalars(query).one_or_none()
            return None if row is None else DriftStatus.model_validate(row, from_attributes=True)

    def drift_statuses(self, domain: str | None = None) -> list[DriftStatus]:
        """Every drift reading (optionally of one domain), sorted by domain and line."""
        query = select(DriftStatusRow).order_by(DriftStatusRow.domain, DriftStatusRow.line)
        if domain is not None:
            query = query.where(DriftStatusRow.domain == domain)
        with self._sessions() as session:
            return [DriftStatus.model_validate(row, from_attributes=True) for row in session.scalars(query)]


def _frame_values(result: InspectionResult, position: EventPosition | None, now: datetime) -> dict[str, Any]:
    return {
        "domain": result.domain, "line": result.line, "frame_id": result.frame_id,
        "timestamp": result.timestamp, "score": result.score, "threshold": result.threshold,
        "verdict": result.verdict.value, "bucket": result.bucket, "result_key": result.result_key,
        "map_key": result.map_key, "overlay_key": result.overlay_key, "model_version": result.model_version,
        "reference_version": result.reference_version, "latency_ms": result.latency_ms,
        "map_statistics": result.map_statistics.model_dump(mode="json"),
        "event_digest": hashlib.sha256(result.to_bytes()).hexdigest(),
        "event_partition": position.partition if position else None,
        "event_offset": position.offset if position else None,
        "indexed_at": now,
    }  # fmt: skip


def _event_order(values: dict[str, Any]) -> tuple[datetime, int]:
    """The order upserts keep: capture time, then position on the results topic (-1 when unknown)."""
    offset = values["event_offset"]
    return values["timestamp"], -1 if offset is None else offset


def _dead_letter_values(dead_letter: DeadLetter, now: datetime) -> dict[str, Any]:
    return {
        "topic": dead_letter.topic, "partition": dead_letter.partition, "offset": dead_letter.offset,
        "reason": dead_letter.reason.value, "detail": dead_letter.detail, "frame_id": dead_letter.frame_id,
        "domain": _payload_field(dead_letter.payload, "domain"), "line": _payload_field(dead_letter.payload, "line"),
        "key": dead_letter.key, "payload_size": dead_letter.payload_size,
        "payload_truncated": dead_letter.payload_truncated, "failed_at": dead_letter.failed_at, "indexed_at": now,
    }  # fmt: skip


def _filtered(query: Select[Any], frame_filter: FrameFilter) -> Select[Any]:
    if frame_filter.domain is not None:
        query = query.where(FrameRow.domain == frame_filter.domain)
    if frame_filter.line is not None:
        query = query.where(FrameRow.line == frame_filter.line)
    if frame_filter.verdict is not None:
        query = query.where(FrameRow.verdict == frame_filter.verdict.value)
    if frame_filter.since is not None:
        query = query.where(FrameRow.timestamp >= frame_filter.since)
    if frame_filter.until is not None:
        query = query.where(FrameRow.timestamp < frame_filter.until)
    return query


def _frame_columns() -> Select[Any]:
    """The columns IndexedFrame shows, as plain rows: building ORM objects first doubled a page's read time."""
    table = FrameRow.__table__
    return select(*(table.c[name] for name in _FRAME_VIEW_COLUMNS))


_FRAME_VIEW_COLUMNS = (
    "domain", "line", "frame_id", "timestamp", "score", "threshold", "verdict", "bucket", "result_key", "map_key",
    "overlay_key", "model_version", "reference_version", "latency_ms", "map_statistics", "indexed_at",
)  # fmt: skip


def _frame_view(row: Any) -> IndexedFrame:
    return IndexedFrame(
        domain=row.domain, line=row.line, frame_id=row.frame_id, timestamp=row.timestamp, score=row.score,
        threshold=row.threshold, verdict=Verdict(row.verdict), bucket=row.bucket, result_key=row.result_key,
        map_key=row.map_key, overlay_key=row.overlay_key, model_version=row.model_version,
        reference_version=row.reference_version, latency_ms=row.latency_ms,
        map_statistics=MapStatistics.model_validate(row.map_statistics),
        indexed_at=row.indexed_at,
    )  # fmt: skip

