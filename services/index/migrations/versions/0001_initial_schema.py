"""Initial schema: frames, dead letters, reviews, drift status.

Revision ID: 0001
Revises:
Create Date: 2026-12-01

Times are naive UTC DateTime columns (services.index.models.UtcDateTime converts on the Python side).
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "frames",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("domain", sa.String(length=128), nullable=False),
        sa.Column("line", sa.String(length=128), nullable=False),
        sa.Column("frame_id", sa.String(length=128), nullable=False),
        sa.Column("timestamp", sa.DateTime(), nullable=False, comment="Capture time of the frame (UTC)."),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("verdict", sa.String(length=16), nullable=False),
        sa.Column("bucket", sa.String(length=128), nullable=False),
        sa.Column("result_key", sa.String(length=1024), nullable=False),
        sa.Column("map_key", sa.String(length=1024), nullable=False),
        sa.Column("overlay_key", sa.String(length=1024), nullable=False),
        sa.Column("model_version", sa.String(length=1024), nullable=False),
        sa.Column("reference_version", sa.String(length=1024), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("map_statistics", sa.JSON(), nullable=False, comment="MapStatistics of the result, as JSON."),
        sa.Column("event_digest", sa.String(length=64), nullable=False, comment="SHA-256 of the event's JSON: tells a duplicate."),
        sa.Column("event_partition", sa.Integer(), nullable=True, comment="Results-topic partition of the event."),
        sa.Column("event_offset", sa.BigInteger(), nullable=True, comment="Results-topic offset of the event."),
        sa.Column("indexed_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("domain", "line", "frame_id", name="uq_frames_domain_line_frame"),
    )
    op.create_index("ix_frames_domain_line_timestamp", "frames", ["domain", "line", "timestamp"])
    op.create_index("ix_frames_timestamp", "frames", ["timestamp"])

    op.create_table(
        "dead_letters",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("topic", sa.String(length=256), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("frame_id", sa.String(length=256), nullable=True),
        sa.Column("domain", sa.String(length=256), nullable=True, comment="From the payload when it parsed that far."),
        sa.Column("line", sa.String(length=256), nullable=True, comment="From the payload when it parsed that far."),
        sa.Column("key", sa.String(length=1024), nullable=True),
        sa.Column("payload_size", sa.BigInteger(), nullable=False),
        sa.Column("payload_truncated", sa.Boolean(), nullable=False),
        sa.Column("failed_at", sa.DateTime(), nullable=False),
        sa.Column("indexed_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("topic", "partition", "offset", name="uq_dead_letters_source"),
    )
    op.create_index("ix_dead_letters_failed_at", "dead_letters", ["failed_at"])
    op.create_index("ix_dead_letters_domain_line", "dead_letters", ["domain", "line"])

    op.create_table(
        "reviews",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("domain", sa.String(length=128), nullable=False),
        sa.Column("line", sa.String(length=128), nullable=False),
        sa.Column("frame_id", sa.String(length=128), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("actor", sa.String(length=256), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("registry_version", sa.Integer(), nullable=True, comment="Domain version a mark-normal created."),
        sa.Column("example_uri", sa.String(length=1024), nullable=True, comment="Where a confirmed defect was stored."),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_reviews_frame", "reviews", ["domain", "line", "frame_id"])

    op.create_table(
        "drift_status",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("domain", sa.String(length=128), nullable=False),
        sa.Column("line", sa.String(length=128), nullable=False),
        sa.Column("level", sa.String(length=16), nullable=False, comment="ok | drifting | insufficient"),
        sa.Column("statistic", sa.Float(), nullable=True, comment="PSI of the window against calibration."),
        sa.Column("p_value", sa.Float(), nullable=True, comment="Two-sample KS p-value, for reference."),
        sa.Column("window_size", sa.Integer(), nullable=False),
        sa.Column("reference_size", sa.Integer(), nullable=False),
        sa.Column("reference_version", sa.String(length=1024), nullable=True),
        sa.Column("since", sa.DateTime(), nullable=False, comment="When the current level began."),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("domain", "line", name="uq_drift_status_domain_line"),
    )


def downgrade() -> None:
    op.drop_table("drift_status")
    op.drop_index("ix_reviews_frame", table_name="reviews")
    op.drop_table("reviews")
    op.drop_index("ix_dead_letters_domain_line", table_name="dead_letters")
    op.drop_index("ix_dead_letters_failed_at", table_name="dead_letters")
    op.drop_table("dead_letters")
    op.drop_index("ix_frames_timestamp", table_name="frames")
    op.drop_index("ix_frames_domain_line_timestamp", table_name="frames")
    op.drop_table("frames")
