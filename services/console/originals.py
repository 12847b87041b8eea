"""Where a reviewed frame's original image is found (the result objects hold only map and overlay).

Two places, tried in order:

1. `input{suffix}` (input.png, input.jpg, ...) in the frame's result prefix, next to result.json, when the
   consumer keeps the frame's image there as received (inline frames are gone from Kafka after retention).
2. The frames bucket, where the producer uploads a frame that is too large to travel inline and sends
   it by reference: frames/{domain}/{line}/{YYYY-MM-DD}/{frame_id}{suffix}, the date in UTC.

A frame found in neither place cannot be taught from; OriginalImageMissing says where it looked.
"""
from __future__ import annotations

from datetime import timezone

from minio.error import S3Error

from services.index.repository import IndexedFrame
from services.storage.object_store import ObjectStore
from services.imaging.decoding import IMAGE_SUFFIXES

INPUT_STEM = "input"
_MISSING = {"NoSuchKey", "NoSuchObject", "NotFound", "NoSuchBucket"}


class OriginalImageMissing(LookupError):
    """Neither the result prefix nor the frames bucket holds the frame's original image."""


class OriginalImages:
    """Reads original frame images from the results bucket or the frames bucket."""

    def __init__(self, store: ObjectStore, frames_bucket: str) -> None:
        self._store = store
        self._frames_bucket = frames_bucket

    def input_stem(self, frame: IndexedFrame) -> str:
        """{result prefix}input: the frame's kept image is this plus an image suffix (the folder of result.json)."""
        return frame.result_key.rsplit("/", 1)[0] + "/" + INPUT_STEM

    def frames_key_stem(self, frame: IndexedFrame) -> str:
        """frames/{domain}/{line}/{day}/{frame_id}, the producer's by-reference key without its suffix."""
        day = frame.timestamp.astimezone(timezone.utc).strftime("%Y-%m-%d")
        return f"frames/{frame.domain}/{frame.line}/{day}/{frame.frame_id}"

    def locate(self, frame: IndexedFrame) -> tuple[str, str]:
        """(bucket, key) of the original image; OriginalImageMissing when there is none."""
        input_stem, frames_stem = self.input_stem(frame), self.frames_key_stem(frame)
        for bucket, stem in ((frame.bucket, input_stem), (self._frames_bucket, frames_stem)):
            key = self._image_named(bucket, stem)
            if key is not None:
                return bucket, key
        raise OriginalImageMissing(
            f"frame {frame.domain}/{frame.line}/{frame.frame_id}: its original image is stored neither as "
            f"s3://{frame.bucket}/{input_stem}.* nor as s3://{self._frames_bucket}/{frames_stem}.* "
            "(a frame sent inline is kept only if the consumer stores its input)"
        )

    def _image_named(self, bucket: str, stem: str) -> str | None:
        """The key stem + an image suffix, if stored. Exact names only: frame "a.b" must not pick up "a.b.c"."""
        try:
            keys = set(self._store.list_keys(bucket, stem + "."))
        except S3Error as error:
            if error.code not in _MISSING:
                raise
            return None
        return next((stem + suffix for suffix in sorted(IMAGE_SUFFIXES) if stem + suffix in keys), None)

    def read(self, frame: IndexedFrame) -> bytes:
        """The original image's encoded bytes."""
        bucket, key = self.locate(frame)
        return self._store.get_bytes(bucket, key)
