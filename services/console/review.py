"""Teach by example: the review operations behind the console's buttons, its HTTP API and `inctrl review`.

mark_normal(frame)     the frame's original image joins the domain's references as a NEW registry version
                       (DomainRegistry.add_references: the current references plus this one, threshold
                       recalibrated); replicas pick it up at their next bank re-check, without a restart.
                       The image is also kept as a "good" labelled example.
confirm_defect(frame)  the original image, its anomaly map thresholded as the mask, and the note are stored
                       as a "defect" labelled example (services/console/labelled.py) for the next training run.
versions(domain)       every stored registry version, ascending.
activate(domain, v)    make any stored version current again (rollback or roll-forward).

Every review is recorded in the index (who, when, what it produced); the registry versions carry the
actor and note themselves. A frame already among the current references (marked normal in the current
version or one of its ancestors) is refused rather than added twice; after a rollback past that version
it can be marked again.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timezone

from pydantic import BaseModel, ConfigDict

from model import InCTRLv2
from services.console.labelled import Label, LabelledExample, LabelledExamples
from services.console.originals import OriginalImages
from services.index.repository import IndexedFrame, InspectionIndex, Review, ReviewAction
from services.storage.object_store import ObjectStore
from services.registry.domain_registry import DomainRegistry
from services.registry.records import DomainRecord
from services.imaging.decoding import decode_image

logger = logging.getLogger(__name__)


class FrameNotIndexed(LookupError):
    """The frame is not in the inspection index."""


class AlreadyReferenced(RuntimeError):
    """The frame is already one of the domain's current reference images."""


class MarkedNormal(BaseModel):
    """A mark-normal's outcome: the new current version and the review recorded."""

    model_config = ConfigDict(frozen=True)

    record: DomainRecord
    review: Review
    example: LabelledExample


class ConfirmedDefect(BaseModel):
    """A confirm-defect's outcome: the labelled example written and the review recorded."""

    model_config = ConfigDict(frozen=True)

    example: LabelledExample
    review: Review


class ReviewService:
    """Review operations over the index, the registry and the object store (all injected)."""

    def __init__(
        self,
        index: InspectionIndex,
        registry: DomainRegistry,
        store: ObjectStore,
        originals: OriginalImages,
        examples: LabelledExamples,
        detector: Callable[[], InCTRLv2],
        clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
    ) -> None:
        self.index = index
        self.registry = registry
        self._store = store
        self._originals = originals
        self.examples = examples
        self._detector = detector
        self._clock = clock
        # One review at a time per console: each builds a bank (CPU or GPU heavy) and moves current.json.
        self._lock = threading.Lock()

    def frame(self, domain: str, line: str, frame_id: str) -> IndexedFrame:
        """The indexed frame; FrameNotIndexed when the index has no such frame."""
        found = self.index.get(domain, line, frame_id)
        if found is None:
            raise FrameNotIndexed(f"frame {domain}/{line}/{frame_id} is not in the inspection index")
        return found

    def mark_normal(self, domain: str, line: str, frame_id: str, actor: str, note: str | None = None) -> MarkedNormal:
        """Add the frame to the domain's references as a new, current registry version."""
        frame = self.frame(domain, line, frame_id)
        with self._lock:
            self._refuse_if_referenced(frame)
            image = decode_image(self._originals.read(frame))
            record = self.registry.add_references(
                domain, [image], self._detector(), actor=actor, note=note, source=f"review:{domain}/{line}/{frame_id}"
            )
            now = self._clock()
            example = self.examples.add(frame, Label.GOOD, image, actor, now, note)
            review = self.index.record_review(
                Review(domain=domain, line=line, frame_id=frame_id, action=ReviewAction.MARK_NORMAL, actor=actor,
                       note=note, registry_version=record.version, example_uri=example.image_uri, created_at=now)
            )  # fmt: skip
        logger.info(
            "frame marked normal",
            extra={"domain": domain, "line": line, "frame_id": frame_id, "actor": actor, "version": record.version,
                   "threshold": record.threshold},
        )  # fmt: skip
        return MarkedNormal(record=record, review=review, example=example)

    def confirm_defect(self, domain: str, line: str, frame_id: str, actor: str, note: str | None = None) -> ConfirmedDefect:
        """Store the frame, its thresholded map and the note as a labelled defect example."""
        frame = self.frame(domain, line, frame_id)
        with self._lock:
            image = decode_image(self._originals.read(frame))
            map_png = self._store.get_bytes(frame.bucket, frame.map_key)
            now = self._clock()
            example = self.examples.add(frame, Label.DEFECT, image, actor, now, note, map_png=map_png)
            review = self.index.record_review(
                Review(domain=domain, line=line, frame_id=frame_id, action=ReviewAction.CONFIRM_DEFECT, actor=actor,
                       note=note, example_uri=example.image_uri, created_at=now)
            )  # fmt: skip
        logger.info("defect confirmed", extra={"domain": domain, "line": line, "frame_id": frame_id, "actor": actor})
        return ConfirmedDefect(example=example, review=review)

    def versions(self, domain: str) -> list[DomainRecord]:
        """Every stored version of the domain, ascending."""
        return self.registry.history(domain)

    def activate(self, domain: str, version: int, actor: str) -> DomainRecord:
        """Make a stored version current again."""
        with self._lock:
            record = self.registry.activate(domain, version, actor=actor)
        logger.info("domain version activated", extra={"domain": domain, "version": version, "actor": actor})
        return record

    def _refuse_if_referenced(self, frame: IndexedFrame) -> None:
        marked = {
            review.registry_version: review
            for review in self.index.reviews(frame.domain, frame.line, frame.frame_id)
            if review.action is ReviewAction.MARK_NORMAL and review.registry_version is not None
        }
        if not marked:
            return
        lineage = self._current_lineage(frame.domain)
        for version in sorted(marked.keys() & lineage):
            review = marked[version]
            raise AlreadyReferenced(
                f"frame {frame.domain}/{frame.line}/{frame.frame_id} is already a reference of {frame.domain}: "
                f"marked normal by {review.actor} at {review.created_at:%Y-%m-%d %H:%M:%S} UTC (v{version})"
            )

    def _current_lineage(self, domain: str) -> set[int]:
        """The current version and its ancestors (parent_version chain)."""
        by_version = {record.version: record for record in self.registry.history(domain)}
        lineage: set[int] = set()
        version: int | None = self.registry.current_version(domain)
        while version is not None and version not in lineage and version in by_version:
            lineage.add(version)
            version = by_version[version].parent_version
        return lineage
