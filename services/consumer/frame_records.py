"""One polled frame record -> a DecodedFrame ready to inspect, or the precise reason it cannot be one.

    FrameRecordDecoder(settings, store).decode(record) -> DecodedFrame | RecordRejected

Checks, in order: message size, schema, timestamp (it must fall on a UTC day: the result keys need it),
domain, image reference (a usable S3 URI inside the allowed buckets/prefixes, an object no larger than the
limit: its size is read before the object), image limits (pixels, each side, decoded bytes) and decoding.
Nothing a record contains raises out of decode(): an unforeseen error becomes internal_error with the
exception type in the detail. Only infrastructure trouble (ObjectStoreUnavailable) propagates: it is
nobody's input fault, so the caller must stall and retry, never dead-letter.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timezone

from kafka.consumer.fetcher import ConsumerRecord
from minio.error import S3Error
from pydantic import ValidationError

from services.imaging.decoding import ImageDecodeError, ImageTooLarge, decode_image
from services.protocol.outcomes import DecodedFrame
from services.protocol.messages import DeadLetterReason, InspectionRequest
from services.storage.object_store import ObjectStore, ObjectStoreUnavailable, ObjectTooLarge
from services.storage.uri import InvalidS3Uri, S3Uri
from services.settings import ServiceSettings

logger = logging.getLogger(__name__)

# Bounds on text taken from a message into a detail: hostile field names can be hundreds of kB long.
_LOCATION_CHARS = 120
_MESSAGE_CHARS = 300
_VALIDATION_ERRORS_SHOWN = 5


@dataclass(frozen=True)
class RecordRejected:
    """A record that cannot be inspected: final, dead-lettered with this reason."""

    reason: DeadLetterReason
    detail: str


class _Refusal(Exception):
    def __init__(self, reason: DeadLetterReason, detail: str) -> None:
        super().__init__(detail)
        self.rejected = RecordRejected(reason, detail)


def shorten(text: str, limit: int) -> str:
    """text cut to about `limit` characters, saying how long it was."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def validation_summary(error: ValidationError) -> str:
    """The first few validation errors as 'location: message', each part bounded."""
    parts = []
    for item in error.errors(include_url=False, include_input=False)[:_VALIDATION_ERRORS_SHOWN]:
        location = ".".join(str(part) for part in item["loc"]) or "message"
        parts.append(f"{shorten(location, _LOCATION_CHARS)}: {shorten(item['msg'], _MESSAGE_CHARS)}")
    if error.error_count() > _VALIDATION_ERRORS_SHOWN:
        parts.append(f"and {error.error_count() - _VALIDATION_ERRORS_SHOWN} more")
    return "; ".join(parts)


class FrameRecordDecoder:
    """Validates and decodes frame records under the limits of the settings (thread-safe)."""

    def __init__(
        self,
        settings: ServiceSettings,
        store: ObjectStore | None,
        known_domains: Callable[[str], bool] | None = None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._known_domains = known_domains
        self._allowed = [S3Uri.parse_prefix(prefix) for prefix in settings.allowed_image_prefixes()]

    def decode(self, record: ConsumerRecord) -> DecodedFrame | RecordRejected:
        """The record's frame decoded, or why not; raises only ObjectStoreUnavailable."""
        try:
            return self._decode(record.value)
        except _Refusal as refusal:
            return refusal.rejected
        except ObjectStoreUnavailable:
            raise
        except Exception as error:  # the last line of defence: one record must never stop the consumer
            logger.exception(
                "unexpected error handling a frame record",
                extra={"topic": record.topic, "partition": record.partition, "offset": record.offset},
            )
            return RecordRejected(
                DeadLetterReason.INTERNAL_ERROR, f"{type(error).__name__}: {shorten(str(error), _MESSAGE_CHARS)}"
            )

    def _decode(self, payload: bytes | None) -> DecodedFrame:
        settings = self._settings
        if not payload:
            raise _Refusal(DeadLetterReason.SCHEMA_VIOLATION, "empty message value")
        if len(payload) > settings.max_message_bytes:
            raise _Refusal(
                DeadLetterReason.OVERSIZE,
                f"message is {len(payload)} bytes, above the limit of {settings.max_message_bytes}",
            )
        try:
            request = InspectionRequest.from_bytes(payload)
        except ValidationError as error:
            raise _Refusal(DeadLetterReason.SCHEMA_VIOLATION, validation_summary(error)) from error
        try:
            request.timestamp.astimezone(timezone.utc)
        except (OverflowError, ValueError) as error:
            raise _Refusal(
                DeadLetterReason.INVALID_TIMESTAMP,
                f"timestamp {request.timestamp.isoformat()} has no UTC date: {error}",
            ) from error
        if self._known_domains is not None and not self._known_domains(request.domain):
            raise _Refusal(DeadLetterReason.UNKNOWN_DOMAIN, f"domain {request.domain!r} is not registered")
        image_bytes = request.image if request.image is not None else self._fetch_image(request.image_uri or "")
        try:
            image = decode_image(
                image_bytes,
                max_pixels=settings.max_image_pixels,
                max_side=settings.max_image_side,
                max_decoded_bytes=settings.max_decoded_image_bytes,
            )
        except ImageTooLarge as error:
            raise _Refusal(DeadLetterReason.IMAGE_TOO_LARGE, str(error)) from error
        except ImageDecodeError as error:
            raise _Refusal(DeadLetterReason.UNDECODABLE_IMAGE, str(error)) from error
        return DecodedFrame(request=request, image=image, encoded=image_bytes)

    def _fetch_image(self, uri: str) -> bytes:
        try:
            reference = S3Uri.parse(uri)
            bucket, key = reference.bucket, reference.key
        except InvalidS3Uri as error:
            raise _Refusal(DeadLetterReason.FORBIDDEN_REFERENCE, str(error)) from error
        if not any(bucket == allowed.bucket and key.startswith(allowed.key) for allowed in self._allowed):
            allowed = ", ".join(self._settings.allowed_image_prefixes())
            raise _Refusal(
                DeadLetterReason.FORBIDDEN_REFERENCE, f"{shorten(uri, _MESSAGE_CHARS)} is outside the allowed {allowed}"
            )
        if self._store is None:
            raise _Refusal(DeadLetterReason.FORBIDDEN_REFERENCE, "this consumer has no object store to read image_uri from")
        try:
            return self._store.get_bytes(bucket, key, max_bytes=self._settings.max_image_object_bytes)
        except ObjectTooLarge as error:
            raise _Refusal(DeadLetterReason.IMAGE_TOO_LARGE, str(error)) from error
        except S3Error as error:
            # Missing or unreadable objects are bad input; an unreachable store raises ObjectStoreUnavailable instead.
            raise _Refusal(
                DeadLetterReason.UNDECODABLE_IMAGE, f"cannot read {shorten(uri, _MESSAGE_CHARS)}: {error.code}"
            ) from error
        except ValueError as error:  # the S3 client refuses names our URI check let through
            raise _Refusal(DeadLetterReason.FORBIDDEN_REFERENCE, f"{shorten(uri, _MESSAGE_CHARS)}: {error}") from error


