"""Where a reviewed frame's original image is found (the result objects hold only map and overlay).

Two places, tried in order:

1. `input.png` in the frame's result prefix, next to result.json, when the consumer keeps the decoded
   input there (the frame then needs nothing else: inline frames are gone from Kafka after retention).
2. The frames bucket, where the producer uploads a frame that is too large to travel inline and sends
   it by reference: frames/{domain}/{line}/{YYYY-MM-DD}/{frame_id}{suffix}, the date in UTC.

A frame found in neither place cannot be taught from; OriginalImageMissing says where it looked.
"""
from __future__ import annotations

from datetime import timezone

from minio.error import S3Error

from services.index.repository import IndexedFrame
from services.object_store import ObjectStore
from services.registry import IMAGE_SUFFIXES

INPUT_OBJECT = "input.png"
_MISSING = {"NoSuchKey", "NoSuchObject", "NotFound", "NoSuchBucket"}


class OriginalImageMissing(LookupError):
    """Neither the result prefix nor the frames bucket holds the frame's original image."""


class OriginalImages:
    """Reads original frame images from the results bucket or the frames bucket."""

    def __init__(self, store: ObjectStore, frames_bucket: str) -> None:
        self._store = store
        self._frames_bucket = frames_bucket

    def input_key(self, frame: IndexedFrame) -> str:
        """The key of input.png in the frame's result prefix (the folder of result.json)."""
        return frame.result_key.rsplit("/", 1)[0] + "/" + INPUT_OBJECT

    def frames_key_stem(self, frame: IndexedFrame) -> str:
        """frames/{domain}/{line}/{day}/{frame_id}, the producer's by-reference key without its suffix."""
        day = frame.timestamp.astimezone(timezone.utc).strftime("%Y-%m-%d")
        return f"frames/{frame.domain}/{frame.line}/{day}/{frame.frame_id}"

    def locate(self, frame: IndexedFrame) -> tuple[str, str]:
        """(bucket, key) of the original image; OriginalImageMissing when there is none."""
        input_key = self.input_key(frame)
        if self._store.exists(frame.bucket, input_key):
            return frame.bucket, input_key
        stem = self.frames_key_stem(frame)
        try:
            keys = set(self._store.list_keys(self._frames_bucket, stem))
        except S3Error as error:
            if error.code not in _MISSING:
                raise
            keys = set()
        # Exact names only: frame "a.b" must not pick up frame "a.b.c"'s upload.
        for suffix in sorted(IMAGE_SUFFIXES):
            if stem + suffix in keys:
                return self._frames_bucket, stem + suffix
        raise OriginalImageMissing(
            f"frame {frame.domain}/{frame.line}/{frame.frame_id}: its original image is stored neither at "
            f"s3://{frame.bucket}/{input_key} nor under s3://{self._frames_bucket}/{stem}.* "
            "(a frame sent inline is kept only if the consumer stores its input)"
        )

    def read(self, frame: IndexedFrame) -> bytes:
        """The original image's encoded bytes."""
        bucket, key = self.locate(frame)
        return self._store.get_bytes(bucket, key)
