"""The FrameConsumer's `inspect` callable over HTTP: POST /v1/inspect/batch on the Serve app's ingress.

Frames travel prepared (float16 pixels at the backbone's geometry, services/protocol/batch.py): the
consumer decoded them already, and the ingress and replicas then neither decode nor resample. The
input size comes from GET /v1/model, asked once.

Used where the consumer runs outside the Ray cluster (the Helm chart's consumer pods). Connection failures
and answers that are nobody's input fault (404 while the app deploys, 5xx, 401/403/429) are retried a bounded number of times; then
InspectionUnavailable is raised, so the consumer commits nothing and replays the batch. Any other refusal
raises InspectionRequestRejected, which the consumer treats as a failed attempt of those frames: it tries
them one by one and dead-letters one only after its attempt limit, with the server's answer in the detail.
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence

import requests
from pydantic import SecretStr, ValidationError

from services.protocol.batch import (
    BATCH_ROUTE,
    IMAGES_PART,
    MANIFEST_PART,
    MODEL_ROUTE,
    BatchFrame,
    BatchInspectionResponse,
    BatchManifest,
    ModelInfo,
    pixels_part,
)
from services.protocol.outcomes import DecodedFrame, InspectionOutcome, InspectionUnavailable
from services.storage.retry import RetryPolicy

logger = logging.getLogger(__name__)

# 404: the Serve proxy answers it while the application is still being deployed. 500: a replica or the
# ingress failed, nobody's input fault. 401/403: this consumer's token is missing or lacks the scope, a
# configuration fault that no frame may be blamed for. 429: overload.
_RETRYABLE_STATUS = {401, 403, 404, 429, 500, 502, 503, 504}
_HEALTH_TIMEOUT_S = 2.0
_ERROR_BODY_CHARS = 500


class InspectionRequestRejected(RuntimeError):
    """The ingress refused the batch for a reason retrying cannot fix; the message holds its answer."""


class HttpInspectionClient:
    """Sends a micro-batch as one multipart request; returns one outcome per frame, in order."""

    def __init__(
        self,
        serve_url: str,
        timeout_s: float = 120.0,
        max_attempts: int = 4,
        initial_backoff_s: float = 0.5,
        max_backoff_s: float = 8.0,
        token: SecretStr | None = None,
    ) -> None:
        if not serve_url.startswith(("http://", "https://")):
            raise ValueError(f"serve URL must start with http:// or https://, got {serve_url!r}")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        self.base_url = serve_url.rstrip("/")
        self._timeout_s = timeout_s
        self._max_attempts = max_attempts
        self._retry = RetryPolicy(initial_backoff_s=initial_backoff_s, max_backoff_s=max_backoff_s)
        self._session = requests.Session()
        if token is not None:  # the ingress's `inspect` scope (services/auth.py)
            self._session.headers["Authorization"] = f"Bearer {token.get_secret_value()}"
        self._model: ModelInfo | None = None

    def input_size(self) -> int:
        """S, the backbone's input size (asked once); InspectionUnavailable while the ingress cannot answer."""
        if self._model is None:
            url = f"{self.base_url}{MODEL_ROUTE}"
            try:
                response = self._session.get(url, timeout=self._timeout_s)
                response.raise_for_status()
                self._model = ModelInfo.model_validate_json(response.content)
            except (requests.RequestException, ValidationError) as error:
                raise InspectionUnavailable(f"{url}: no model information: {error}") from error
        return self._model.input_size

    def __call__(self, frames: Sequence[DecodedFrame]) -> list[InspectionOutcome]:
        if not frames:
            return []
        manifest = BatchManifest(frames=[_manifest_entry(frame) for frame in frames])
        parts = [(MANIFEST_PART, (None, manifest.model_dump_json(), "application/json"))]
        parts += [(IMAGES_PART, (f.request.frame_id, _part(f), "application/octet-stream")) for f in frames]
        response = self._post(parts, len(frames))
        try:
            answer = BatchInspectionResponse.model_validate_json(response.content)
            if len(answer.outcomes) != len(frames):
                raise ValueError(f"{len(answer.outcomes)} outcomes for {len(frames)} frames")
            mismatched = [o.frame_id for o, f in zip(answer.outcomes, frames) if o.frame_id != f.request.frame_id]
            if mismatched:
                raise ValueError(f"outcomes out of order, first unexpected frame id {mismatched[0]!r}")
            return [outcome.to_outcome() for outcome in answer.outcomes]
        except (ValidationError, ValueError) as error:
            raise InspectionRequestRejected(f"{self.base_url}{BATCH_ROUTE} gave an unreadable answer: {error}") from error

    def reachable(self) -> bool:
        """Whether the ingress answers its health check now (for the consumer's readiness)."""
        try:
            return self._session.get(f"{self.base_url}/healthz", timeout=_HEALTH_TIMEOUT_S).status_code == 200
        except requests.RequestException:
            return False

    def close(self) -> None:
        """Release pooled connections."""
        self._session.close()

    def _post(self, parts: list[tuple[str, tuple[str | None, bytes | str, str]]], count: int) -> requests.Response:
        url = f"{self.base_url}{BATCH_ROUTE}"
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self._session.post(url, files=parts, timeout=self._timeout_s)
            except requests.Timeout as error:
                # The service took the batch and is slow: retrying now would only pile on more work.
                raise InspectionUnavailable(f"{url}: no answer within {self._timeout_s}s for {count} frames") from error
            except requests.ConnectionError as error:
                failure = f"cannot connect: {error}"
            else:
                if response.status_code == 200:
                    return response
                if response.status_code not in _RETRYABLE_STATUS:
                    raise InspectionRequestRejected(
                        f"{url} refused {count} frames with HTTP {response.status_code}: {_error_text(response)}"
                    )
                failure = f"HTTP {response.status_code}: {_error_text(response)}"
            if attempt == self._max_attempts:
                raise InspectionUnavailable(f"{url} still failing after {attempt} attempts: {failure}")
            backoff = self._retry.delay_s(attempt)
            logger.warning(
                "inspection request failed, retrying",
                extra={"url": url, "attempt": attempt, "error": failure, "backoff_s": backoff},
            )
            time.sleep(backoff)


def _manifest_entry(frame: DecodedFrame) -> BatchFrame:
    request = frame.request
    size = (int(frame.image.shape[-2]), int(frame.image.shape[-1])) if frame.pixels is not None else None
    return BatchFrame(domain=request.domain, line=request.line, frame_id=request.frame_id, original_size=size)


def _part(frame: DecodedFrame) -> bytes:
    """The prepared pixels; a frame the consumer did not prepare goes as its image file (the ingress prepares it)."""
    if frame.pixels is not None:
        return pixels_part(frame.pixels)
    encoded = frame.encoded if frame.encoded is not None else frame.request.image
    if encoded is None:
        raise ValueError(f"frame {frame.request.frame_id}: neither prepared pixels nor image bytes to send")
    return encoded


def _error_text(response: requests.Response) -> str:
    try:
        return json.dumps(response.json()["detail"])[:_ERROR_BODY_CHARS]
    except (ValueError, KeyError, TypeError):
        return response.text[:_ERROR_BODY_CHARS]
