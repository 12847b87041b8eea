"""The inspection index: results and dead letters in a database (SQLite or PostgreSQL) for the console.

    from services.index import InspectionIndex, FrameFilter, create_index_engine, upgrade
    engine = create_index_engine(IndexSettings().database_url); upgrade(engine)
    index = InspectionIndex(engine)
    index.recent(FrameFilter(domain="capsule", verdict=Verdict.ANOMALOUS), limit=50)
"""
from services.index.database import create_index_engine, upgrade
from services.index.repository import (
    DriftLevel,
    DriftStatus,
    EventPosition,
    FrameFilter,
    IndexedDeadLetter,
    IndexedFrame,
    InspectionIndex,
    Review,
    ReviewAction,
)
from services.index.settings import IndexSettings

__all__ = [
    "DriftLevel",
    "DriftStatus",
    "EventPosition",
    "FrameFilter",
    "IndexSettings",
    "IndexedDeadLetter",
    "IndexedFrame",
    "InspectionIndex",
    "Review",
    "ReviewAction",
    "create_index_engine",
    "upgrade",
]
