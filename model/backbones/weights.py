"""Resolve a weights reference (local path or s3:// URI) to a local file."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from urllib.parse import urlparse

from .base import WeightsUnavailableError

CACHE_DIR = Path(os.environ.get("INCTRL_WEIGHTS_CACHE", Path.home() / ".cache" / "inctrl" / "weights"))


def resolve_weights_file(ref: str) -> Path:
    """Local file as is; s3:// objects are downloaded once into the weights cache."""
    if ref.startswith("s3://"):
        return _download_s3(ref)
    path = Path(ref).expanduser()
    if not path.is_file():
        raise WeightsUnavailableError(f"weights file {path} does not exist")
    return path


def _download_s3(uri: str) -> Path:
    """Credentials and endpoint come from INCTRL_S3_* environment variables, as for the services."""
    parsed = urlparse(uri)
    bucket, key = parsed.netloc, parsed.path.lstrip("/")
    target = CACHE_DIR / hashlib.sha256(uri.encode()).hexdigest()[:16] / Path(key).name
    if target.is_file():
        return target
    endpoint = os.environ.get("INCTRL_S3_ENDPOINT")
    if not endpoint:
        raise WeightsUnavailableError(f"cannot fetch {uri}: set INCTRL_S3_ENDPOINT (and INCTRL_S3_ACCESS_KEY/SECRET_KEY)")
    from minio import Minio

    client = Minio(
        endpoint.removeprefix("http://").removeprefix("https://"),
        access_key=os.environ.get("INCTRL_S3_ACCESS_KEY"),
        secret_key=os.environ.get("INCTRL_S3_SECRET_KEY"),
        secure=os.environ.get("INCTRL_S3_SECURE", "false").lower() == "true",
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        client.fget_object(bucket, key, str(target))
    except Exception as exc:  # noqa: BLE001 - every failure means the same thing to the caller
        raise WeightsUnavailableError(f"cannot fetch {uri}: {exc}") from exc
    return target
