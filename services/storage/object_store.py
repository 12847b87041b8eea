"""S3 object store access (MinIO in production, SeaweedFS locally) with retries that ride out outages."""

from __future__ import annotations

import functools
import io
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import urllib3
from minio import Minio
from minio.deleteobjects import DeleteObject
from minio.error import InvalidResponseError, S3Error, ServerError
from pydantic import BaseModel

from services.settings import ServiceSettings
from services.storage.retry import RetryPolicy

logger = logging.getLogger(__name__)

T = TypeVar("T")

# S3 error codes that mean "the request itself is wrong"; retrying cannot help.
_PERMANENT_S3_CODES = {
    "NoSuchKey",
    "NoSuchBucket",
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidBucketName",
    "InvalidArgument",
    "MethodNotAllowed",
}
# Codes that are worth retrying whatever HTTP status carried them (S3 sends RequestTimeout as a 400).
_TRANSIENT_S3_CODES = {"RequestTimeout", "SlowDown", "InternalError", "ServiceUnavailable", "OperationAborted"}
# Any other code is classified by its HTTP status: 5xx and 429 are the server's trouble, other 4xx the request's.
_TRANSIENT_STATUS = 500
_TOO_MANY_REQUESTS = 429


# The S3 multi-object delete takes at most 1000 keys per request.
_DELETE_BATCH = 1000


class ObjectStoreError(RuntimeError):
    """The object store answered but refused part of an operation; the message names what failed."""


class PreconditionFailed(ObjectStoreError):
    """A conditional write lost: the object already exists (create) or changed since it was read (replace)."""


# How S3 servers answer a conditional PUT that lost: 412, or AWS's 409 when two such writes overlap.
_PRECONDITION_CODES = {"PreconditionFailed", "ConditionalRequestConflict"}


class ObjectStoreUnavailable(RuntimeError):
    """The object store kept failing until the retry deadline passed; nothing was dropped silently."""


class ObjectTooLarge(ObjectStoreError):
    """An object is larger than the caller accepts; it was not read."""


def _is_retryable(error: Exception) -> bool:
    if isinstance(error, S3Error):
        if error.code in _TRANSIENT_S3_CODES:
            return True
        if error.code in _PERMANENT_S3_CODES:
            return False
        status = getattr(error.response, "status", None)
        return isinstance(status, int) and (status >= _TRANSIENT_STATUS or status == _TOO_MANY_REQUESTS)
    # Connection refused/reset, timeouts, 5xx and non-S3 answers from a server still starting up.
    return isinstance(error, (ServerError, InvalidResponseError, urllib3.exceptions.HTTPError, OSError))


class ObjectStore:
    """Bytes and JSON in and out of S3 buckets; every call retries transient failures up to the deadline."""

    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        secure: bool = False,
        region: str | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        self._retry = retry or RetryPolicy()
        # The client's own urllib3 retries would hide outages from our deadline; we retry ourselves.
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=5.0, read=30.0),
            retries=urllib3.Retry(total=0, redirect=0, raise_on_status=False),
            maxsize=16,
        )
        self._client = Minio(
            endpoint, access_key=access_key, secret_key=secret_key, secure=secure, region=region, http_client=http
        )
        self.endpoint = endpoint

    @classmethod
    def from_settings(cls, settings: ServiceSettings) -> ObjectStore:
        """Build a store from ServiceSettings (endpoint, keys, retry policy)."""
        return cls(
            endpoint=settings.s3_endpoint,
            access_key=settings.s3_access_key.get_secret_value(),
            secret_key=settings.s3_secret_key.get_secret_value(),
            secure=settings.s3_secure,
            region=settings.s3_region,
            retry=RetryPolicy(
                deadline_s=settings.s3_retry_deadline_s,
                initial_backoff_s=settings.s3_retry_initial_backoff_s,
                max_backoff_s=settings.s3_retry_max_backoff_s,
            ),
        )

    def _with_retry(self, operation: str, call: Callable[[], T]) -> T:
        deadline = time.monotonic() + self._retry.deadline_s
        attempt = 1
        while True:
            try:
                return call()
            except Exception as error:
                if not _is_retryable(error):
                    raise
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ObjectStoreUnavailable(
                        f"{operation} on {self.endpoint} still failing after {attempt} attempts "
                        f"and {self._retry.deadline_s:.1f}s: {error}"
                    ) from error
                logger.warning(
                    "%s failed (attempt %d), retrying: %s",
                    operation,
                    attempt,
                    error,
                    extra={"operation": operation, "attempt": attempt, "error": str(error)},
                )
                time.sleep(min(self._retry.delay_s(attempt), remaining))
                attempt += 1

    def ensure_bucket(self, bucket: str) -> None:
        """Create the bucket if it does not exist yet."""

        def create() -> None:
            if not self._client.bucket_exists(bucket):
                try:
                    self._client.make_bucket(bucket)
                except S3Error as error:
                    # Another writer won the race.
                    if error.code not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                        raise

        self._with_retry(f"ensure_bucket {bucket}", create)

    def put_bytes(self, bucket: str, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        """Write one object (overwrites: keys are deterministic, so a replay replaces the earlier copy)."""
        self._with_retry(
            f"put s3://{bucket}/{key}",
            lambda: self._client.put_object(bucket, key, io.BytesIO(data), len(data), content_type=content_type),
        )

    def get_bytes(self, bucket: str, key: str, max_bytes: int | None = None) -> bytes:
        """Read one object whole; a missing object raises minio.error.S3Error (code NoSuchKey) at once.

        With max_bytes, the object's size is checked (stat) before it is read, and ObjectTooLarge is raised
        without reading it when it is larger; the read itself stops after max_bytes + 1 bytes, so an object
        replaced by a larger one in between is refused as well.
        """

        def read() -> bytes:
            if max_bytes is not None:
                size = self._client.stat_object(bucket, key).size or 0
                if size > max_bytes:
                    raise ObjectTooLarge(f"s3://{bucket}/{key} is {size} bytes, above the limit of {max_bytes}")
            response = self._client.get_object(bucket, key)
            try:
                data = response.read() if max_bytes is None else response.read(max_bytes + 1)
            finally:
                response.close()
                response.release_conn()
            if max_bytes is not None and len(data) > max_bytes:
                raise ObjectTooLarge(f"s3://{bucket}/{key} grew above the limit of {max_bytes} bytes while read")
            return data

        return self._with_retry(f"get s3://{bucket}/{key}", read)

    def download(self, bucket: str, key: str, path: Path) -> None:
        """Stream one object to a local file (written beside it, then renamed: never a half file at `path`)."""
        partial = path.with_name(path.name + ".partial")
        self._with_retry(f"download s3://{bucket}/{key}", lambda: self._client.fget_object(bucket, key, str(partial)))
        partial.replace(path)

    def find_bytes(self, bucket: str, key: str) -> bytes | None:
        """Read one object whole, or None when it does not exist."""
        try:
            return self.get_bytes(bucket, key)
        except S3Error as error:
            if error.code in {"NoSuchKey", "NoSuchObject", "NotFound"}:
                return None
            raise

    def put_bytes_if(
        self, bucket: str, key: str, data: bytes, etag: str | None, content_type: str = "application/octet-stream"
    ) -> str:
        """Write one object only if it is absent (etag None: If-None-Match: *) or still has `etag` (If-Match).

        Returns the new ETag; raises PreconditionFailed when the condition does not hold. A transient failure
        is retried like any write, so a write that landed before its answer was lost reads as
        PreconditionFailed on the retry: callers that need to tell compare the stored bytes with theirs.
        """
        condition = {"If-None-Match": "*"} if etag is None else {"If-Match": f'"{etag}"'}
        headers = {"Content-Type": content_type, **condition}

        def put() -> str:
            try:
                # minio 7.2's put_object sends unknown headers as x-amz-meta-*; its PutObject call sends them as given.
                return self._client._put_object(bucket, key, data, headers=headers).etag  # noqa: SLF001
            except S3Error as error:
                if error.code in _PRECONDITION_CODES:
                    raise PreconditionFailed(f"conditional put s3://{bucket}/{key} ({next(iter(condition))}): {error.code}") from error
                raise

        return self._with_retry(f"conditional put s3://{bucket}/{key}", put)

    def get_bytes_and_etag(self, bucket: str, key: str) -> tuple[bytes, str]:
        """Read one object whole with its ETag (for a later put_bytes_if); a missing object raises S3Error NoSuchKey."""

        def read() -> tuple[bytes, str]:
            response = self._client.get_object(bucket, key)
            try:
                return response.read(), response.headers.get("ETag", "").strip('"')
            finally:
                response.close()
                response.release_conn()

        return self._with_retry(f"get s3://{bucket}/{key}", read)

    def put_json(self, bucket: str, key: str, document: BaseModel | dict[str, Any] | list[Any]) -> None:
        """Write a pydantic model or plain JSON value as application/json."""
        if isinstance(document, BaseModel):
            payload = document.model_dump_json().encode()
        else:
            payload = json.dumps(document).encode()
        self.put_bytes(bucket, key, payload, content_type="application/json")

    def get_json(self, bucket: str, key: str) -> Any:
        """Read and parse a JSON object."""
        return json.loads(self.get_bytes(bucket, key))

    def exists(self, bucket: str, key: str) -> bool:
        """Whether the object exists."""

        def stat() -> bool:
            try:
                self._client.stat_object(bucket, key)
            except S3Error as error:
                if error.code in {"NoSuchKey", "NoSuchObject", "NotFound"}:
                    return False
                raise
            return True

        return self._with_retry(f"stat s3://{bucket}/{key}", stat)

    def list_keys(self, bucket: str, prefix: str = "") -> list[str]:
        """All keys under a prefix, recursively, sorted."""
        return self._with_retry(
            f"list s3://{bucket}/{prefix}",
            lambda: sorted(item.object_name for item in self._client.list_objects(bucket, prefix, recursive=True)),
        )

    def delete(self, bucket: str, key: str) -> None:
        """Remove one object; removing a missing object is not an error (S3 deletes are idempotent)."""
        self._with_retry(f"delete s3://{bucket}/{key}", lambda: self._client.remove_object(bucket, key))

    def delete_prefix(self, bucket: str, prefix: str) -> int:
        """Remove every object under a non-empty prefix; returns how many were removed."""
        if not prefix:
            raise ValueError(f"delete_prefix on bucket {bucket!r} needs a non-empty prefix (refusing to empty the bucket)")
        keys = self.list_keys(bucket, prefix)
        for start in range(0, len(keys), _DELETE_BATCH):
            batch = keys[start : start + _DELETE_BATCH]
            self._with_retry(
                f"delete {len(batch)} objects under s3://{bucket}/{prefix}", functools.partial(self._remove_batch, bucket, batch)
            )
        return len(keys)

    def _remove_batch(self, bucket: str, keys: list[str]) -> None:
        # remove_objects is lazy: iterating it sends the request and yields one error per object not removed.
        errors = list(self._client.remove_objects(bucket, [DeleteObject(key) for key in keys]))
        if errors:
            first = errors[0]
            raise ObjectStoreError(
                f"{len(errors)} of {len(keys)} objects in s3://{bucket} not deleted, e.g. {first.name}: {first.code} {first.message}"
            )
