"""Where Ray Train writes runs and checkpoints: a local folder or an s3:// URI (endpoint and credentials
from INCTRL_S3_* environment variables, as everywhere in the project)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs


class StorageError(ValueError):
    """The output location cannot be used (missing S3 settings, unreadable path)."""


@dataclass(frozen=True)
class RunStorage:
    """`path` is relative to `filesystem`: a bucket/prefix on S3, an absolute folder locally."""

    uri: str
    path: str
    filesystem: pafs.FileSystem

    def run_path(self, run_name: str) -> str:
        return f"{self.path.rstrip('/')}/{run_name}"

    def exists(self, path: str) -> bool:
        return self.filesystem.get_file_info(path).type != pafs.FileType.NotFound

    def download(self, path: str, local: Path) -> Path:
        """Copy a folder (a checkpoint) to a local folder."""
        local.mkdir(parents=True, exist_ok=True)
        pafs.copy_files(path, str(local), source_filesystem=self.filesystem, destination_filesystem=pafs.LocalFileSystem())
        return local


def s3_filesystem() -> pafs.S3FileSystem:
    endpoint = os.environ.get("INCTRL_S3_ENDPOINT")
    if not endpoint:
        raise StorageError("s3:// output needs INCTRL_S3_ENDPOINT (and INCTRL_S3_ACCESS_KEY / INCTRL_S3_SECRET_KEY)")
    secure = os.environ.get("INCTRL_S3_SECURE", "false").lower() == "true"
    return pafs.S3FileSystem(
        endpoint_override=endpoint.removeprefix("http://").removeprefix("https://"),
        scheme="https" if secure else "http",
        access_key=os.environ.get("INCTRL_S3_ACCESS_KEY"),
        secret_key=os.environ.get("INCTRL_S3_SECRET_KEY"),
        region=os.environ.get("INCTRL_S3_REGION", "us-east-1"),
    )


def resolve_storage(uri: str) -> RunStorage:
    """`s3://bucket/prefix` or a local folder (created if missing)."""
    if uri.startswith("s3://"):
        path = uri.removeprefix("s3://").strip("/")
        if not path:
            raise StorageError(f"output {uri!r} names no bucket")
        return RunStorage(uri, path, s3_filesystem())
    if "://" in uri:
        raise StorageError(f"output {uri!r}: only local folders and s3:// URIs are supported")
    folder = Path(uri).expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return RunStorage(str(folder), str(folder), pafs.LocalFileSystem())
