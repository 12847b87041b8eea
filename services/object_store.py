"""S3 object store access (MinIO in production, SeaweedFS locally) with retries that ride out outages."""

from __future__ import annotations

import functools
import io
import json
import logging
import time
from collections.abc import Callable
from datetime import timezone
from typing import Any, NamedTuple, TypeVar

import urllib3
from minio import Minio
from minio.deleteobjects import DeleteObject
from minio.error import InvalidResponseError, S3Error, ServerError
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from services.settings import ServiceSettings

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


class RetryPolicy(BaseModel):
    """Exponential backoff bounded by a total deadline."""

    model_config = ConfigDict(frozen=True)

    deadline_s: float = Field(120.0, gt=0)
    initial_backoff_s: float = Field(0.2, gt=0)
    max_backoff_s: float = Field(5.0, gt=0)
    multiplier: float = Field(2.0, ge=1.0)


class ResultKeys(NamedTuple):
    """The three object keys of one frame's result."""

    result: str
    map: str
    overlay: str


def result_prefix(domain: str, line: str, timestamp: AwareDatetime, frame_id: str) -> str:
    """results/{domain}/{line}/{YYYY-MM-DD}/{frame_id}/ with the date taken in UTC, so replays hit the same key."""
    day = timestamp.astimezone(timezone.utc).strftime("%Y-%m-%d")
    return f"results/{domain}/{line}/{day}/{frame_id}/"


def result_keys(domain: str, line: str, timestamp: AwareDatetime, frame_id: str) -> ResultKeys:
    """Deterministic keys of result.json, map.png and overlay.jpg for one frame."""
    prefix = result_prefix(domain, line, timestamp, frame_id)
    return ResultKeys(result=prefix + "result.json", map=prefix + "map.png", overlay=prefix + "overlay.jpg")


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """Split s3://bucket/key into (bucket, key)."""
    if not uri.startswith("s3://"):
        raise ValueError(f"not an s3:// URI: {uri!r}")
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket or not key:
        raise ValueError(f"s3 URI needs both bucket and key: {uri!r}")
    return bucket, key


def _is_retryable(error: Exception) -> bool:
    if isinstance(error, S3Error):
        return error.code not in _PERMANENT_S3_CODES
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
        backoff = self._retry.initial_backoff_s
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
                time.sleep(min(backoff, remaining))
                backoff = min(backoff * self._retry.multiplier, self._retry.max_backoff_s)
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

    def get_bytes(self, bucket: str, key: str) -> bytes:
        """Read one object whole; a missing object raises minio.error.S3Error (code NoSuchKey) at once."""

        def read() -> bytes:
            response = self._client.get_object(bucket, key)
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

        return self._with_retry(f"get s3://{bucket}/{key}", read)

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
