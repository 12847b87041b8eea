"""Resolve a weights reference to a local file: a path as is, a URI through the caller's resolver.

The model reads local files only; fetching s3:// (or any other URI) is the job of the layer above, which
passes a WeightsResolver in (services/storage/weights.py resolves s3:// through the project's S3 client).
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .base import WeightsUnavailableError

WeightsResolver = Callable[[str], Path]
"""A URI (e.g. s3://bucket/key) -> a local file holding it; raises WeightsUnavailableError when it cannot."""


def resolve_weights_file(ref: str, resolver: WeightsResolver | None = None) -> Path:
    """A local file as is; a URI through `resolver`."""
    if "://" in ref:
        if resolver is None:
            raise WeightsUnavailableError(
                f"weights {ref!r} are a URI: the model reads local files; load it through a resolver "
                "(InCTRLv2(..., weights_resolver=...); the services resolve s3:// from their S3 settings)"
            )
        return resolver(ref)
    path = Path(ref).expanduser()
    if not path.is_file():
        raise WeightsUnavailableError(f"weights file {path} does not exist")
    return path
