"""Publishing frames: small images inline, large ones uploaded to S3 and sent by reference."""

from __future__ import annotations

import hashlib
import logging
import re
from datetime import datetime, timezone
from pathlib import Path

from kafka import KafkaProducer
from kafka.producer.future import FutureRecordMetadata

from services.imaging.decoding import IMAGE_SUFFIXES
from services.protocol.messages import InspectionRequest
from services.storage.object_store import ObjectStore
from services.settings import ServiceSettings

logger = logging.getLogger(__name__)

_SEND_TIMEOUT_S = 30.0
_CONTENT_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".bmp": "image/bmp"}


def frame_id_for(name: str, content: bytes) -> str:
    """Deterministic frame id from a file name and its bytes: producing the same file twice gives the same id."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(name).stem).strip("-._")[:100] or "frame"
    return f"{stem}-{hashlib.sha256(content).hexdigest()[:12]}"


class FrameProducer:
    """Sends InspectionRequest messages; never sends one above settings.max_message_bytes."""

    def __init__(self, settings: ServiceSettings, store: ObjectStore | None = None) -> None:
        self._settings = settings
        self._store = store
        self._producer = KafkaProducer(
            **settings.kafka_client_options(),
            client_id="inctrl-frame-producer",
            acks="all",
            linger_ms=10,
            max_request_size=settings.max_message_bytes,
        )
        self._pending: list[FutureRecordMetadata] = []
        self._frames_bucket_ready = False

    def send_image(
        self,
        image: bytes,
        domain: str,
        line: str,
        frame_id: str,
        timestamp: datetime | None = None,
        topic: str | None = None,
        suffix: str = ".png",
    ) -> InspectionRequest:
        """Send one encoded image (PNG, JPEG...); returns the request that went on the wire."""
        when = timestamp or datetime.now(timezone.utc)
        request = InspectionRequest(frame_id=frame_id, domain=domain, line=line, timestamp=when, image=image)
        if len(image) > self._settings.inline_image_max_bytes or len(request.to_bytes()) > self._settings.max_message_bytes:
            request = self._by_reference(image, domain, line, frame_id, when, suffix)
        self.send_request(request, topic)
        return request

    def send_request(self, request: InspectionRequest, topic: str | None = None) -> None:
        """Send a ready request, keyed by domain/line so one line's frames stay in order."""
        payload = request.to_bytes()
        if len(payload) > self._settings.max_message_bytes:
            raise ValueError(
                f"frame {request.frame_id}: message is {len(payload)} bytes, above the limit of "
                f"{self._settings.max_message_bytes}; send the image by image_uri instead"
            )
        target = topic or self._settings.frames_topics[0]
        key = f"{request.domain}/{request.line}".encode()
        self._pending.append(self._producer.send(target, key=key, value=payload))

    def flush(self) -> int:
        """Wait until every sent message is acknowledged; raises on the first failed send. Returns the count."""
        self._producer.flush(timeout=_SEND_TIMEOUT_S)
        pending, self._pending = self._pending, []
        for future in pending:
            future.get(timeout=_SEND_TIMEOUT_S)
        return len(pending)

    def close(self) -> None:
        """Flush and release the connection."""
        self.flush()
        self._producer.close()

    def __enter__(self) -> FrameProducer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _by_reference(
        self, image: bytes, domain: str, line: str, frame_id: str, timestamp: datetime, suffix: str
    ) -> InspectionRequest:
        if self._store is None:
            raise ValueError(
                f"frame {frame_id}: image of {len(image)} bytes is too large to send inline "
                f"(limit {self._settings.inline_image_max_bytes}) and no object store was given"
            )
        bucket = self._settings.frames_bucket
        if not self._frames_bucket_ready:
            self._store.ensure_bucket(bucket)
            self._frames_bucket_ready = True
        day = timestamp.astimezone(timezone.utc).strftime("%Y-%m-%d")
        key = f"frames/{domain}/{line}/{day}/{frame_id}{suffix.lower()}"
        self._store.put_bytes(bucket, key, image, content_type=_CONTENT_TYPES.get(suffix.lower(), "application/octet-stream"))
        return InspectionRequest(
            frame_id=frame_id, domain=domain, line=line, timestamp=timestamp, image_uri=f"s3://{bucket}/{key}"
        )


def produce_folder(
    folder: Path,
    domain: str,
    line: str,
    settings: ServiceSettings,
    topic: str | None = None,
    store: ObjectStore | None = None,
    limit: int | None = None,
) -> list[InspectionRequest]:
    """Send every image file of a folder (sorted by name, not recursive) as frames; returns the requests sent."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in {folder}")
    files = files[:limit] if limit is not None else files
    requests = []
    with FrameProducer(settings, store) as producer:
        for path in files:
            content = path.read_bytes()
            requests.append(
                producer.send_image(content, domain, line, frame_id_for(path.name, content), topic=topic, suffix=path.suffix)
            )
    inline = sum(request.image is not None for request in requests)
    logger.info(
        "folder produced",
        extra={"folder": str(folder), "frames": len(requests), "inline": inline, "by_reference": len(requests) - inline},
    )
    return requests
