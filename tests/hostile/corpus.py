"""Hostile frame messages, one class each, with the outcome the consumer must give them.

build_corpus(settings, store) uploads the objects some cases reference (into the settings' frames bucket)
and returns the cases in send order. An outcome is RESULT or a DeadLetterReason; a case may allow
several (e.g. a pair of frames sharing an id: whichever is stored first gets the result).
"""
from __future__ import annotations

import base64
import io
import json
import struct
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
from PIL import Image

from services.protocol.messages import DeadLetterReason
from services.storage.object_store import ObjectStore
from services.settings import ServiceSettings

RESULT = "result"
NOW = "2026-03-01T08:00:00+00:00"
S = DeadLetterReason


@dataclass(frozen=True)
class HostileCase:
    """One message to send (to partition 0, in order) and the outcomes it may end in."""

    name: str
    value: bytes
    expected: frozenset[str]
    key: bytes | None = None


def encoded(image: Image.Image, fmt: str = "PNG", **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def plain_png(seed: int, size: tuple[int, int] = (32, 32)) -> bytes:
    rng = np.random.default_rng(seed)
    return encoded(Image.fromarray(np.clip(128 + rng.normal(0, 3, (size[1], size[0], 3)), 0, 255).astype(np.uint8)))


def message(frame_id: str, image: bytes | None = None, image_uri: str | None = None, **fields: object) -> bytes:
    document: dict[str, object] = {"frame_id": frame_id, "domain": "washer", "line": "line-1", "timestamp": NOW}
    if image is not None:
        document["image"] = base64.b64encode(image).decode()
    if image_uri is not None:
        document["image_uri"] = image_uri
    document.update(fields)
    return json.dumps(document).encode()


def _zero_width_png() -> bytes:
    """A PNG whose IHDR declares width 0 (with a valid CRC), which PIL's encoder cannot write."""
    png = encoded(Image.new("L", (4, 4)))
    ihdr_start = 8 + 8  # signature, then length and type of the IHDR chunk
    body = bytearray(png[ihdr_start : ihdr_start + 13])
    body[0:4] = struct.pack(">I", 0)
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + bytes(body)) & 0xFFFFFFFF)
    return png[:ihdr_start] + bytes(body) + crc + png[ihdr_start + 17 :]


def _exif_rotated_jpeg() -> bytes:
    image = Image.fromarray(np.random.default_rng(5).integers(100, 150, (24, 40, 3), dtype=np.uint8))
    exif = image.getexif()
    exif[0x0112] = 6
    return encoded(image, "JPEG", exif=exif.tobytes())


def _multi_frame_gif() -> bytes:
    frames = [Image.new("RGB", (16, 16), (120 + i, 120, 120)) for i in range(3)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    return buffer.getvalue()


def build_corpus(settings: ServiceSettings, store: ObjectStore) -> list[HostileCase]:
    """The hostile messages, in send order; uploads the objects the URI cases point at."""
    frames = settings.frames_bucket
    store.ensure_bucket(frames)
    store.put_bytes(frames, "hostile/zero.png", b"")
    store.put_bytes(frames, "hostile/huge.png", plain_png(0) + b"\0" * (settings.max_image_object_bytes + 1))
    store.put_bytes(frames, "hostile/truncated.png", plain_png(1)[:200])
    store.put_bytes(frames, "hostile/good.png", plain_png(2))
    png = plain_png(3)
    huge_name = "x" * 600_000
    cases = [
        # Malformed JSON and pathological nesting.
        HostileCase("malformed-json", b'{"frame_id": "broken', frozenset({S.SCHEMA_VIOLATION})),
        HostileCase("binary-garbage", bytes(range(256)) * 8, frozenset({S.SCHEMA_VIOLATION})),
        HostileCase("empty-value", b"", frozenset({S.SCHEMA_VIOLATION})),
        HostileCase("nested-lists-200kB", b"[" * 100_000 + b"]" * 100_000, frozenset({S.SCHEMA_VIOLATION})),
        HostileCase("nested-objects", b'{"a":' * 50_000 + b"1" + b"}" * 50_000, frozenset({S.SCHEMA_VIOLATION})),
        HostileCase("json-array", b"[1, 2, 3]", frozenset({S.SCHEMA_VIOLATION})),
        HostileCase("json-null", b"null", frozenset({S.SCHEMA_VIOLATION})),
        HostileCase("invalid-utf8-in-string", b'{"frame_id": "a\xff\xfe", "domain": "washer"}', frozenset({S.SCHEMA_VIOLATION})),
        # Schema and type violations.
        HostileCase("missing-domain", message("missing-domain", png, domain=None), frozenset({S.SCHEMA_VIOLATION})),
        HostileCase("wrong-types", message("wrong-types", png, line=7, timestamp=True), frozenset({S.SCHEMA_VIOLATION})),
        HostileCase("path-in-frame-id", message("../../etc/passwd", png), frozenset({S.SCHEMA_VIOLATION})),
        HostileCase("huge-frame-id", message("f" * 100_000, png), frozenset({S.SCHEMA_VIOLATION})),
        HostileCase("huge-field-name", message("huge-field-name", png, **{huge_name: 1}), frozenset({S.SCHEMA_VIOLATION})),
        HostileCase("many-extra-fields", message("many-extra", png, **{f"x{i}": i for i in range(20_000)}), frozenset({S.SCHEMA_VIOLATION})),
        HostileCase("both-image-sources", message("both", png, image_uri=f"s3://{frames}/hostile/good.png"), frozenset({S.SCHEMA_VIOLATION})),
        HostileCase("no-image-source", message("no-image"), frozenset({S.SCHEMA_VIOLATION})),
        HostileCase("bad-base64", message("bad-base64").replace(b'"timestamp"', b'"image": "!!!not base64!!!", "timestamp"'), frozenset({S.SCHEMA_VIOLATION})),
        HostileCase("huge-key-bad-message", b"{not json", frozenset({S.SCHEMA_VIOLATION}), key=b"k" * 500_000),
        HostileCase("oversize-message", message("oversize", plain_png(4) + b"\0" * settings.max_message_bytes), frozenset({S.OVERSIZE})),
        HostileCase("unknown-domain", message("unknown-domain", png, domain="turbine"), frozenset({S.UNKNOWN_DOMAIN})),
        # Out-of-range timestamps.
        HostileCase("naive-timestamp", message("naive-ts", png, timestamp="2026-03-01T08:00:00"), frozenset({S.SCHEMA_VIOLATION})),
        HostileCase("year-9999-west", message("ts-9999", png, timestamp="9999-12-31T23:30:00-05:00"), frozenset({S.INVALID_TIMESTAMP})),
        HostileCase("year-1-east", message("ts-0001", png, timestamp="0001-01-01T00:30:00+05:00"), frozenset({S.INVALID_TIMESTAMP})),
        HostileCase("impossible-date", message("ts-bad", png, timestamp="2026-13-45T99:00:00Z"), frozenset({S.SCHEMA_VIOLATION})),
        # Images.
        HostileCase("truncated-png", message("truncated", plain_png(5)[:300]), frozenset({S.UNDECODABLE_IMAGE})),
        HostileCase("png-magic-then-garbage", message("garbage", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64), frozenset({S.UNDECODABLE_IMAGE})),
        HostileCase("zero-width-png", message("zero-width", _zero_width_png()), frozenset({S.UNDECODABLE_IMAGE})),
        HostileCase("bomb-by-pixels", message("bomb-pixels", encoded(Image.new("L", (10_000, 10_000)))), frozenset({S.IMAGE_TOO_LARGE})),
        HostileCase("bomb-by-side", message("bomb-side", encoded(Image.new("L", (500, 70_000)))), frozenset({S.IMAGE_TOO_LARGE})),
        HostileCase("bomb-by-decoded-bytes", message("bomb-bytes", encoded(Image.new("L", (6324, 6324)))), frozenset({S.IMAGE_TOO_LARGE})),
        HostileCase("extreme-aspect", message("aspect", encoded(Image.new("RGB", (16_000, 2), (120, 120, 120)))), frozenset({RESULT})),
        HostileCase("multi-frame-gif", message("multi-frame", _multi_frame_gif()), frozenset({RESULT})),
        HostileCase("sixteen-bit", message("sixteen-bit", encoded(Image.fromarray(np.full((16, 16), 30000, np.uint16)))), frozenset({RESULT})),
        HostileCase("cmyk-jpeg", message("cmyk", encoded(Image.new("CMYK", (16, 16), (10, 20, 30, 40)), "JPEG")), frozenset({RESULT})),
        HostileCase("palette-png", message("palette", encoded(Image.new("RGB", (16, 16), (90, 90, 90)).convert("P"))), frozenset({RESULT})),
        HostileCase("la-png", message("la", encoded(Image.new("LA", (16, 16), (128, 200)))), frozenset({RESULT})),
        HostileCase("exif-rotated", message("exif-rotated", _exif_rotated_jpeg()), frozenset({RESULT})),
        HostileCase("float-tiff-nan", message("nan-tiff", encoded(Image.fromarray(np.full((8, 8), np.nan, np.float32)), "TIFF")), frozenset({RESULT})),
        # URIs: malformed, pointing elsewhere, at huge, empty or broken objects.
        HostileCase("uri-adjacent-dots", message("uri-dots", image_uri="s3://a..b/x"), frozenset({S.FORBIDDEN_REFERENCE})),
        HostileCase("uri-dot-segment", message("uri-segment", image_uri=f"s3://{frames}/hostile/../secret"), frozenset({S.FORBIDDEN_REFERENCE})),
        HostileCase("uri-control-character", message("uri-control", image_uri=f"s3://{frames}/a\u0001b"), frozenset({S.FORBIDDEN_REFERENCE})),
        HostileCase("uri-other-bucket", message("uri-elsewhere", image_uri=f"s3://{settings.results_bucket}/results/x/map.png"), frozenset({S.FORBIDDEN_REFERENCE})),
        HostileCase("uri-checkpoint", message("uri-checkpoint", image_uri=settings.checkpoint_uri + "/heads.safetensors"), frozenset({S.FORBIDDEN_REFERENCE})),
        HostileCase("uri-missing-object", message("uri-missing", image_uri=f"s3://{frames}/hostile/nope.png"), frozenset({S.UNDECODABLE_IMAGE})),
        HostileCase("uri-huge-object", message("uri-huge", image_uri=f"s3://{frames}/hostile/huge.png"), frozenset({S.IMAGE_TOO_LARGE})),
        HostileCase("uri-zero-byte-object", message("uri-zero", image_uri=f"s3://{frames}/hostile/zero.png"), frozenset({S.UNDECODABLE_IMAGE})),
        HostileCase("uri-truncated-object", message("uri-truncated", image_uri=f"s3://{frames}/hostile/truncated.png"), frozenset({S.UNDECODABLE_IMAGE})),
        HostileCase("uri-huge-key", message("uri-huge-key", image_uri=f"s3://{frames}/" + "k" * 600_000), frozenset({S.UNDECODABLE_IMAGE})),
        HostileCase("uri-good", message("uri-good", image_uri=f"s3://{frames}/hostile/good.png"), frozenset({RESULT})),
        # Duplicate frame ids: another image under the same id, and a replay of the same message.
        HostileCase("duplicate-id-first", message("dup", plain_png(6)), frozenset({RESULT, S.DUPLICATE_FRAME})),
        HostileCase("duplicate-id-other-image", message("dup", plain_png(7)), frozenset({RESULT, S.DUPLICATE_FRAME})),
        HostileCase("replay-first", message("replayed", plain_png(8)), frozenset({RESULT})),
        HostileCase("replay-same-message", message("replayed", plain_png(8)), frozenset({RESULT})),
    ]
    assert datetime.fromisoformat(NOW).tzinfo is timezone.utc
    return cases
