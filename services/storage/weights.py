"""Backbone weights named by an s3:// URI, fetched once through the project's S3 client into a local cache.

The model reads local files only (model/backbones/weights.py); serving passes S3WeightsResolver in.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from minio.error import S3Error

from model import WeightsUnavailableError
from services.storage.object_store import ObjectStore
from services.storage.uri import InvalidS3Uri, S3Uri

DEFAULT_CACHE_DIR = Path(os.environ.get("INCTRL_WEIGHTS_CACHE", Path.home() / ".cache" / "inctrl" / "weights"))


class S3WeightsResolver:
    """s3://bucket/key -> a cached local copy; WeightsUnavailableError naming the URI when it cannot be read."""

    def __init__(self, store: ObjectStore, cache_dir: Path = DEFAULT_CACHE_DIR) -> None:
        self._store = store
        self._cache_dir = cache_dir

    def __call__(self, ref: str) -> Path:
        try:
            uri = S3Uri.parse(ref)
        except InvalidS3Uri as error:
            raise WeightsUnavailableError(f"weights {ref!r}: {error}") from error
        target = self._cache_dir / hashlib.sha256(ref.encode()).hexdigest()[:16] / Path(uri.key).name
        if target.is_file():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._store.download(uri.bucket, uri.key, target)
        except S3Error as error:
            raise WeightsUnavailableError(f"cannot fetch weights {ref}: {error.code}") from error
        return target
