"""InspectionIndex on a real PostgreSQL server and on SQLite: idempotent upserts, replay, ordering, filters,
dead letters, reviews, drift status, migrations."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from alembic import command
from sqlalchemy import func, select, text

from services.index import (
    DriftLevel,
    DriftStatus,
    EventPosition,
    FrameFilter,
    InspectionIndex,
    Review,
    ReviewAction,
    create_index_engine,
    upgrade,
)
from services.index.database import alembic_config, current_tables
from services.index.models import FrameRow
from services.protocol.messages import DeadLetter, DeadLetterReason, InspectionRequest, Verdict

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)


def frame_rows(index: InspectionIndex) -> int:
    with index.session() as session:
        return session.scalar(select(func.count()).select_from(FrameRow))


def test_migrations_create_every_table_and_rerun_as_no_op(database_url: str) -> None:
    engine = create_index_engine(database_url)
    upgrade(engine)
    upgrade(engine)
    assert {"frames", "dead_letters", "reviews", "drift_status", "alembic_version"} <= current_tables(engine)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == "0001"
    command.downgrade(alembic_config(engine), "base")
    assert current_tables(engine) == {"alembic_version"}
    upgrade(engine)
    assert {"frames", "dead_letters", "reviews", "drift_status"} <= current_tables(engine)
    engine.dispose()


def test_duplicate_event_changes_nothing(index: InspectionIndex, result_factory) -> None:
    result = result_factory("f-1", score=0.8)
    assert index.upsert_result(result, EventPosition(0, 7)) is True
    first = index.get("capsule", "line-1", "f-1")
    assert index.upsert_result(result, EventPosition(0, 7)) is False
    assert index.upsert_result(result) is False  # the same event without a position is not newer either
    assert frame_rows(index) == 1
    assert index.get("capsule", "line-1", "f-1") == first  # indexed_at included: the row was not rewritten
    assert first is not None and first.score == 0.8 and first.verdict is Verdict.ANOMALOUS


def test_newer_event_replaces_and_replayed_older_event_loses(index: InspectionIndex, result_factory) -> None:
    index.upsert_result(result_factory("f-1", score=0.8, reference_version="capsule/v1"), EventPosition(0, 3))
    # Re-inspection of the same frame (same capture time) after a mark-normal: later on the results topic.
    assert index.upsert_result(result_factory("f-1", score=0.2, reference_version="capsule/v2"), EventPosition(0, 9))
    # At-least-once replay of the first event: an older offset must not bring the old verdict back.
    assert not index.upsert_result(result_factory("f-1", score=0.8, reference_version="capsule/v1"), EventPosition(0, 3))
    frame = index.get("capsule", "line-1", "f-1")
    assert frame is not None
    assert (frame.score, frame.verdict, frame.reference_version) == (0.2, Verdict.NORMAL, "capsule/v2")
    # A later capture time wins whatever the offset.
    assert index.upsert_result(result_factory("f-1", score=0.6, timestamp=T0 + timedelta(seconds=1)), EventPosition(0, 1))
    assert index.get("capsule", "line-1", "f-1").score == 0.6
    assert frame_rows(index) == 1


def test_same_frame_id_on_other_line_or_domain_is_another_frame(index: InspectionIndex, result_factory) -> None:
    index.upsert_result(result_factory("f-1", line="line-1"))
    index.upsert_result(result_factory("f-1", line="line-2"))
    index.upsert_result(result_factory("f-1", domain="pcb", reference_version="pcb/v1"))
    assert frame_rows(index) == 3
    assert index.lines() == [("capsule", "line-1"), ("capsule", "line-2"), ("pcb", "line-1")]
    assert index.lines("pcb") == [("pcb", "line-1")]


def test_recent_filters_and_orders_newest_first(index: InspectionIndex, result_factory) -> None:
    for i in range(6):
        index.upsert_result(
            result_factory(f"a-{i}", score=0.9 if i % 2 else 0.1, line=f"line-{i % 3}", timestamp=T0 + timedelta(minutes=i))
        )
    index.upsert_result(result_factory("b-0", domain="pcb", reference_version="pcb/v1", timestamp=T0 + timedelta(hours=1)))

    assert [f.frame_id for f in index.recent()] == ["b-0", "a-5", "a-4", "a-3", "a-2", "a-1", "a-0"]
    assert [f.frame_id for f in index.recent(limit=2)] == ["b-0", "a-5"]
    assert [f.frame_id for f in index.recent(FrameFilter(domain="capsule", verdict=Verdict.ANOMALOUS))] == ["a-5", "a-3", "a-1"]
    assert [f.frame_id for f in index.recent(FrameFilter(domain="capsule", line="line-1"))] == ["a-4", "a-1"]
    window = FrameFilter(since=T0 + timedelta(minutes=2), until=T0 + timedelta(minutes=4))
    assert [f.frame_id for f in index.recent(window)] == ["a-3", "a-2"]  # since inclusive, until exclusive
    # Another time zone names the same instant.
    plus_two = timezone(timedelta(hours=2))
    shifted = FrameFilter(since=(T0 + timedelta(minutes=2)).astimezone(plus_two), until=(T0 + timedelta(minutes=4)).astimezone(plus_two))
    assert [f.frame_id for f in index.recent(shifted)] == ["a-3", "a-2"]
    assert index.recent(FrameFilter(domain="nothing")) == []
    frame = index.recent(FrameFilter(domain="pcb"))[0]
    assert frame.timestamp == T0 + timedelta(hours=1) and frame.timestamp.tzinfo is not None


def test_scores_window_is_the_most_recent_oldest_first(index: InspectionIndex, result_factory) -> None:
    for i in range(5):
        index.upsert_result(result_factory(f"s-{i}", score=i / 10, timestamp=T0 + timedelta(seconds=i)))
    index.upsert_result(result_factory("other", score=0.99, line="line-2", timestamp=T0))
    assert index.scores("capsule", "line-1") == [0.0, 0.1, 0.2, 0.3, 0.4]
    assert index.scores("capsule", "line-1", limit=2) == [0.3, 0.4]
    assert index.scores("capsule", "line-1", since=T0 + timedelta(seconds=3)) == [0.3, 0.4]
    assert sorted(index.scores("capsule")) == [0.0, 0.1, 0.2, 0.3, 0.4, 0.99]


def _dead_letter(offset: int, payload: bytes, reason: DeadLetterReason = DeadLetterReason.UNDECODABLE_IMAGE) -> DeadLetter:
    return DeadLetter(
        reason=reason, detail="cannot identify image file", topic="frames", partition=1, offset=offset,
        key="capsule/line-1", payload=payload, payload_size=len(payload), payload_truncated=False,
        frame_id="f-9" if b"f-9" in payload else None, failed_at=T0 + timedelta(seconds=offset),
    )  # fmt: skip


def test_dead_letters_are_indexed_once_per_frame_message(index: InspectionIndex) -> None:
    request = InspectionRequest(frame_id="f-9", domain="capsule", line="line-1", timestamp=T0, image=b"not an image")
    parsed = _dead_letter(4, request.to_bytes())
    garbage = _dead_letter(5, b"\xff\xfe not json", DeadLetterReason.SCHEMA_VIOLATION)
    assert index.upsert_dead_letter(parsed) is True
    assert index.upsert_dead_letter(parsed) is False  # replay of the same frame message
    assert index.upsert_dead_letter(garbage) is True
    letters = index.dead_letters()
    assert [(d.offset, d.reason, d.frame_id, d.domain, d.line) for d in letters] == [
        (5, DeadLetterReason.SCHEMA_VIOLATION, None, None, None),
        (4, DeadLetterReason.UNDECODABLE_IMAGE, "f-9", "capsule", "line-1"),
    ]
    assert [d.offset for d in index.dead_letters(FrameFilter(domain="capsule"))] == [4]
    assert [d.offset for d in index.dead_letters(FrameFilter(since=T0 + timedelta(seconds=5)))] == [5]


def test_reviews_are_appended_and_filtered(index: InspectionIndex) -> None:
    first = Review(domain="capsule", line="line-1", frame_id="f-1", action=ReviewAction.MARK_NORMAL, actor="alice",
                   registry_version=3, created_at=T0)  # fmt: skip
    second = Review(domain="capsule", line="line-1", frame_id="f-2", action=ReviewAction.CONFIRM_DEFECT, actor="bob",
                    note="crack at the rim", example_uri="s3://inctrl-models/labelled/capsule/f-2/", created_at=T0 + timedelta(minutes=1))  # fmt: skip
    index.record_review(first)
    index.record_review(second)
    index.record_review(first)  # a review is an event: recording it twice keeps both
    assert index.reviews() == [second, first, first]
    assert index.reviews(frame_id="f-2") == [second]
    assert index.reviews(domain="pcb") == []


def test_drift_status_is_replaced_per_line(index: InspectionIndex) -> None:
    assert index.drift_status("capsule", "line-1") is None
    ok = DriftStatus(domain="capsule", line="line-1", level=DriftLevel.OK, statistic=0.02, p_value=0.7,
                     window_size=100, reference_size=40, reference_version="capsule/v1", since=T0, updated_at=T0)  # fmt: skip
    index.set_drift_status(ok)
    drifting = ok.model_copy(update={"level": DriftLevel.DRIFTING, "statistic": 0.9, "since": T0 + timedelta(minutes=5),
                                     "updated_at": T0 + timedelta(minutes=5)})  # fmt: skip
    index.set_drift_status(drifting)
    index.set_drift_status(ok.model_copy(update={"line": "line-2"}))
    assert index.drift_status("capsule", "line-1") == drifting
    assert [s.line for s in index.drift_statuses("capsule")] == ["line-1", "line-2"]


def test_only_sqlite_and_postgresql_urls_are_accepted() -> None:
    with pytest.raises(ValueError, match="only sqlite and postgresql"):
        create_index_engine("mysql+pymysql://user@localhost/db")


def test_batch_upsert_keeps_the_newest_event_of_each_frame(index: InspectionIndex, result_factory) -> None:
    first, other = result_factory("a", score=0.1), result_factory("b", score=0.2)
    reinspected = result_factory("a", score=0.9, reference_version="capsule/v2")
    batch = [(first, EventPosition(0, 1)), (other, EventPosition(0, 2)), (reinspected, EventPosition(0, 3)), (first, EventPosition(0, 1))]
    assert index.upsert_results(batch) == 2  # one statement may not touch a row twice: the batch is reduced first
    assert index.get("capsule", "line-1", "a").reference_version == "capsule/v2"
    assert index.upsert_results(batch) == 0
    later = other.model_copy(update={"timestamp": other.timestamp + timedelta(seconds=1), "score": 0.7, "verdict": Verdict.ANOMALOUS})
    assert index.upsert_results([(later, EventPosition(0, 0))]) == 1
    assert index.get("capsule", "line-1", "b").score == 0.7
    letters = [_dead_letter(1, b"x"), _dead_letter(1, b"x"), _dead_letter(2, b"y")]
    assert index.upsert_dead_letters(letters) == 2 and index.upsert_dead_letters(letters) == 0
    assert index.upsert_results([]) == 0


def test_migrated_schema_matches_the_models(index_engine) -> None:
    """Alembic's own comparison: a column added to the models without a migration fails here."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from services.index.models import Base

    with index_engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection, opts={"compare_type": True}), Base.metadata)
    assert differences == []
