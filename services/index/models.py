"""SQLAlchemy 2 tables of the inspection index: frames (results), dead letters, reviews, drift status.

Frames are keyed by (domain, line, frame_id): one row per camera frame, the newest event wins (see
InspectionIndex.upsert_result). Dead letters are keyed by the position of the frame message that failed
(topic, partition, offset), so a replayed dead letter maps onto the same row. Times are stored as naive
UTC (UtcDateTime) so SQLite and PostgreSQL compare and order them the same way.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Float, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NAME_LENGTH = 128
KEY_LENGTH = 1024


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware datetimes in, naive UTC in the column, UTC-aware datetimes out.

    SQLite has no timezone type and would drop the offset silently; storing UTC everywhere keeps
    comparisons (newest event wins, since/until filters) identical on both databases.
    """

    impl = DateTime(timezone=False)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value.isoformat()} given to the index: timestamps must be timezone-aware")
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=timezone.utc)


class Base(DeclarativeBase):
    """Declarative base of the index tables; Base.metadata is what the Alembic migrations create."""


class FrameRow(Base):
    """One inspected frame: the latest InspectionResult event for (domain, line, frame_id)."""

    __tablename__ = "frames"
    __table_args__ = (
        UniqueConstraint("domain", "line", "frame_id", name="uq_frames_domain_line_frame"),
        Index("ix_frames_domain_line_timestamp", "domain", "line", "timestamp"),
        Index("ix_frames_timestamp", "timestamp"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    domain: Mapped[str] = mapped_column(String(NAME_LENGTH))
    line: Mapped[str] = mapped_column(String(NAME_LENGTH))
    frame_id: Mapped[str] = mapped_column(String(NAME_LENGTH))
    timestamp: Mapped[datetime] = mapped_column(UtcDateTime, comment="Capture time of the frame (UTC).")
    score: Mapped[float] = mapped_column(Float)
    threshold: Mapped[float] = mapped_column(Float)
    verdict: Mapped[str] = mapped_column(String(16))
    bucket: Mapped[str] = mapped_column(String(NAME_LENGTH))
    result_key: Mapped[str] = mapped_column(String(KEY_LENGTH))
    map_key: Mapped[str] = mapped_column(String(KEY_LENGTH))
    overlay_key: Mapped[str] = mapped_column(String(KEY_LENGTH))
    model_version: Mapped[str] = mapped_column(String(KEY_LENGTH))
    reference_version: Mapped[str] = mapped_column(String(KEY_LENGTH))
    latency_ms: Mapped[float] = mapped_column(Float)
    map_statistics: Mapped[dict[str, Any]] = mapped_column(JSON, comment="MapStatistics of the result, as JSON.")
    event_digest: Mapped[str] = mapped_column(String(64), comment="SHA-256 of the event's JSON: tells a duplicate.")
    event_partition: Mapped[int | None] = mapped_column(Integer, comment="Results-topic partition of the event.")
    event_offset: Mapped[int | None] = mapped_column(BigInteger, comment="Results-topic offset of the event.")
    indexed_at: Mapped[datetime] = mapped_column(UtcDateTime)


class DeadLetterRow(Base):
    """One dead-lettered frame message, keyed by where the frame message was read."""

    __tablename__ = "dead_letters"
    __table_args__ = (
        UniqueConstraint("topic", "partition", "offset", name="uq_dead_letters_source"),
        Index("ix_dead_letters_failed_at", "failed_at"),
        Index("ix_dead_letters_domain_line", "domain", "line"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    topic: Mapped[str] = mapped_column(String(NAME_LENGTH * 2))
    partition: Mapped[int] = mapped_column(Integer)
    offset: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(Text)
    frame_id: Mapped[str | None] = mapped_column(String(256))
    domain: Mapped[str | None] = mapped_column(String(256), comment="From the payload when it parsed that far.")
    line: Mapped[str | None] = mapped_column(String(256), comment="From the payload when it parsed that far.")
    key: Mapped[str | None] = mapped_column(String(KEY_LENGTH))
    payload_size: Mapped[int] = mapped_column(BigInteger)
    payload_truncated: Mapped[bool] = mapped_column(Boolean)
    failed_at: Mapped[datetime] = mapped_column(UtcDateTime)
    indexed_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ReviewRow(Base):
    """An operator's decision on one frame (append-only: every review is kept)."""

    __tablename__ = "reviews"
    __table_args__ = (Index("ix_reviews_frame", "domain", "line", "frame_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    domain: Mapped[str] = mapped_column(String(NAME_LENGTH))
    line: Mapped[str] = mapped_column(String(NAME_LENGTH))
    frame_id: Mapped[str] = mapped_column(String(NAME_LENGTH))
    action: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(256))
    note: Mapped[str | None] = mapped_column(Text)
    registry_version: Mapped[int | None] = mapped_column(Integer, comment="Domain version a mark-normal created.")
    example_uri: Mapped[str | None] = mapped_column(String(KEY_LENGTH), comment="Where a confirmed defect was stored.")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class DriftStatusRow(Base):
    """The drift watch's latest reading for one (domain, line)."""

    __tablename__ = "drift_status"
    __table_args__ = (UniqueConstraint("domain", "line", name="uq_drift_status_domain_line"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    domain: Mapped[str] = mapped_column(String(NAME_LENGTH))
    line: Mapped[str] = mapped_column(String(NAME_LENGTH))
    level: Mapped[str] = mapped_column(String(16), comment="ok | drifting | insufficient")
    statistic: Mapped[float | None] = mapped_column(Float, comment="PSI of the window against calibration.")
    p_value: Mapped[float | None] = mapped_column(Float, comment="Two-sample KS p-value, for reference.")
    window_size: Mapped[int] = mapped_column(Integer)
    reference_size: Mapped[int] = mapped_column(Integer)
    reference_version: Mapped[str | None] = mapped_column(String(KEY_LENGTH))
    since: Mapped[datetime] = mapped_column(UtcDateTime, comment="When the current level began.")
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
