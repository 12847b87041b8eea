"""Reviewed frames as labelled training examples, in the generic folder layout `inctrl train` reads.

Under the labelled-examples prefix (ConsoleSettings.labelled_prefix), one folder per domain, which the
folder dataset reader (pipelines/datasets/folder.py) takes as one category:

    {prefix}{domain}/good/{line}--{frame_id}.png     frames an operator marked normal (the original image)
    {prefix}{domain}/defect/{line}--{frame_id}.png   frames an operator confirmed as defective
    {prefix}{domain}/masks/{line}--{frame_id}.png    the defect's pixel mask (same stem as its image)
    {prefix}{domain}/notes/{line}--{frame_id}.json   LabelledExample: who, when, the note, scores, versions

The mask is the frame's anomaly map thresholded at the frame's pixel threshold (map_statistics.threshold):
255 where M(x) >= threshold, else 0. It is the detector's own segmentation, confirmed (not drawn) by the
reviewer: good enough to train DASL on the defect's location, not a hand annotation. The latest decision
on a frame wins: labelling it the other way removes the earlier copy, so no image is in both classes.

`export_folder` copies the prefix to a local folder in the same layout (adding each domain's registry
reference images as reference/, which the reader takes as the few-shot prompt pool), so that
`inctrl train` with data {dataset: folder, root: <folder>} trains on the reviewed frames.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from pathlib import Path

import numpy as np
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from services.console.images import defect_mask_png, encode_image_png
from services.index.repository import IndexedFrame
from services.storage.object_store import ObjectStore
from services.storage.uri import S3Uri

logger = logging.getLogger(__name__)


class Label(StrEnum):
    """The two classes of the folder layout's test split."""

    GOOD = "good"
    DEFECT = "defect"


class LabelledExample(BaseModel):
    """notes/{stem}.json: one reviewed frame as a training example."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    domain: str
    line: str
    frame_id: str
    label: Label
    reviewer: str
    reviewed_at: AwareDatetime
    note: str | None = None
    score: float
    threshold: float
    map_threshold: float
    model_version: str
    reference_version: str
    image_uri: str
    mask_uri: str | None = Field(None, description="Defects only: the thresholded map.")


class ExportSummary(BaseModel):
    """What export_folder wrote."""

    model_config = ConfigDict(frozen=True)

    root: Path
    good: int
    defect: int
    reference: int


def example_stem(frame: IndexedFrame) -> str:
    """{line}--{frame_id}: unique within a domain (frame ids are unique per line) and a safe file name."""
    return f"{frame.line}--{frame.frame_id}"


class LabelledExamples:
    """Writes and exports labelled examples under one s3:// prefix."""

    def __init__(self, store: ObjectStore, prefix: str) -> None:
        self._store = store
        location = S3Uri.parse_prefix(prefix)
        self.bucket, self._prefix = location.bucket, location.key
        self.uri = f"s3://{self.bucket}/{self._prefix}"

    def key(self, domain: str, folder: str, stem: str, suffix: str) -> str:
        return f"{self._prefix}{domain}/{folder}/{stem}{suffix}"

    def add(
        self,
        frame: IndexedFrame,
        label: Label,
        image: np.ndarray,
        reviewer: str,
        reviewed_at: datetime,
        note: str | None = None,
        map_png: bytes | None = None,
    ) -> LabelledExample:
        """Store the frame's image (and, for a defect, its mask from `map_png`) and its notes; returns the notes."""
        if label is Label.DEFECT and map_png is None:
            raise ValueError(f"frame {frame.domain}/{frame.line}/{frame.frame_id}: a defect example needs its map")
        stem = example_stem(frame)
        self._store.ensure_bucket(self.bucket)
        other = Label.GOOD if label is Label.DEFECT else Label.DEFECT
        for stale in (self.key(frame.domain, other.value, stem, ".png"), self.key(frame.domain, "masks", stem, ".png")):
            self._store.delete(self.bucket, stale)
        image_key = self.key(frame.domain, label.value, stem, ".png")
        self._store.put_bytes(self.bucket, image_key, encode_image_png(image), content_type="image/png")
        mask_uri = None
        if label is Label.DEFECT:
            mask_key = self.key(frame.domain, "masks", stem, ".png")
            mask = defect_mask_png(map_png, frame.map_statistics.threshold, image.shape[1:])  # type: ignore[arg-type]
            self._store.put_bytes(self.bucket, mask_key, mask, content_type="image/png")
            mask_uri = f"s3://{self.bucket}/{mask_key}"
        example = LabelledExample(
            domain=frame.domain, line=frame.line, frame_id=frame.frame_id, label=label, reviewer=reviewer,
            reviewed_at=reviewed_at, note=note, score=frame.score, threshold=frame.threshold,
            map_threshold=frame.map_statistics.threshold, model_version=frame.model_version,
            reference_version=frame.reference_version, image_uri=f"s3://{self.bucket}/{image_key}", mask_uri=mask_uri,
        )  # fmt: skip
        self._store.put_json(self.bucket, self.key(frame.domain, "notes", stem, ".json"), example)
        logger.info("labelled example stored", extra={"domain": frame.domain, "frame_id": frame.frame_id, "label": label.value})
        return example

    def domains(self) -> list[str]:
        """Domains with at least one labelled example."""
        return sorted({key[len(self._prefix) :].split("/", 1)[0] for key in self._store.list_keys(self.bucket, self._prefix)})

    def export_folder(
        self, root: Path, domains: Sequence[str] | None = None, references: dict[str, list[bytes]] | None = None
    ) -> ExportSummary:
        """Copy the examples of `domains` (default: all) to root/<domain>/..., plus reference/ from `references`
        (PNG bytes per domain, e.g. the registry's current reference images)."""
        counts = {"good": 0, "defect": 0, "reference": 0}
        for domain in domains or self.domains():
            base = f"{self._prefix}{domain}/"
            for key in self._store.list_keys(self.bucket, base):
                folder = key[len(base) :].split("/", 1)[0]
                target = root / domain / key[len(base) :]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(self._store.get_bytes(self.bucket, key))
                if folder in ("good", "defect"):
                    counts[folder] += 1
            for index, png in enumerate((references or {}).get(domain, [])):
                target = root / domain / "reference" / f"reference-{index:03d}.png"
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(png)
                counts["reference"] += 1
            (root / domain / "good").mkdir(parents=True, exist_ok=True)
        summary = ExportSummary(root=root, **counts)
        logger.info("labelled examples exported", extra=summary.model_dump(mode="json"))
        return summary
