"""Property-based fuzzing of the consumer's per-record path (hypothesis): FrameRecordDecoder.decode and the
dead letter of every refusal, on the real S3 server, then a few hundred generated messages through a real
FrameConsumer on the real broker.

Invariants: decode never raises; a frame it returns is finite float32 (3, H, W) in [0, 1]; a refusal has a
reason other than internal_error (that reason would mean a bug of ours); its dead letter fits the broker's
limit and keeps the original recoverable. Fast subset by default; 10,000 examples with -m slow.
"""
from __future__ import annotations

import base64
import io
import json
import os
from collections import Counter
from collections.abc import Callable
from types import ModuleType

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from kafka.consumer.fetcher import ConsumerRecord
from PIL import Image

from services.consumer.dead_letters import DeadLetterBuilder, original_of
from services.consumer.frame_records import FrameRecordDecoder, RecordRejected
from services.consumer.frame_consumer import FrameConsumer
from services.protocol.outcomes import DecodedFrame
from services.protocol.messages import DeadLetter, DeadLetterReason, InspectionResult
from services.storage.object_store import ObjectStore
from services.settings import ServiceSettings

from .test_hostile_corpus import send_raw

pytestmark = pytest.mark.integration

FAST_EXAMPLES = 400
FULL_EXAMPLES = 10_000
_MODES = ["RGB", "L", "LA", "P", "RGBA", "CMYK", "I;16", "F", "1"]
_FORMATS = {"PNG": {"RGB", "L", "LA", "P", "RGBA", "I;16", "1"}, "JPEG": {"RGB", "L", "CMYK"},
            "TIFF": {"RGB", "L", "CMYK", "F", "I;16", "1"}, "BMP": {"RGB", "L", "P", "1"}, "GIF": {"L", "P"},
            "WEBP": {"RGB", "RGBA"}}  # fmt: skip


@st.composite
def image_files(draw: st.DrawFn) -> bytes:
    """Encoded images of many modes, formats and shapes, sometimes truncated or bit-flipped."""
    fmt = draw(st.sampled_from(sorted(_FORMATS)))
    mode = draw(st.sampled_from(sorted(_FORMATS[fmt])))
    width, height = draw(st.integers(1, 48)), draw(st.integers(1, 48))
    if draw(st.booleans()) and fmt in {"PNG", "GIF"}:  # a tall or wide sliver: cheap to encode, large declared size
        width, height = draw(st.sampled_from([(1, 20_000), (20_000, 1), (1200, 900), (7000, 7000)]))
    image = Image.new(mode, (width, height), draw(st.integers(0, 255)) if mode not in {"F", "I;16"} else 0)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    data = buffer.getvalue()
    damage = draw(st.sampled_from(["none", "none", "truncate", "flip", "prefix"]))
    if damage == "truncate":
        data = data[: draw(st.integers(0, max(0, len(data) - 1)))]
    elif damage == "flip" and data:
        position = draw(st.integers(0, len(data) - 1))
        data = data[:position] + bytes([data[position] ^ draw(st.integers(1, 255))]) + data[position + 1 :]
    elif damage == "prefix":
        data = draw(st.binary(max_size=16)) + data
    return data


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)
# sampled_from leans to its first element: mutations stay the exception, so most messages reach the image path.
_rarely = st.sampled_from([False] * 7 + [True])
_ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_valid_names = st.builds(
    lambda first, rest: first + rest, st.sampled_from(_ALNUM), st.text(alphabet=_ALNUM + "._-", max_size=20)
)
_hostile_names = st.one_of(st.from_regex(r"[A-Za-z0-9._-]{0,140}", fullmatch=True), st.text(max_size=20))
_domains = st.sampled_from(["washer", "washer", "fabric", "fabric", "turbine", "", "../x"])
_timestamps = st.one_of(
    st.just("2026-03-01T08:00:00+00:00"),
    st.just("2026-03-01T08:00:00+00:00"),
    st.just("2026-03-01T08:00:00+00:00"),
    st.datetimes(timezones=st.timezones()).map(lambda moment: moment.isoformat()),
    st.sampled_from(["9999-12-31T23:30:00-05:00", "0001-01-01T00:30:00+05:00", "2026-03-01T08:00:00", "yesterday"]),
)


def _uris(frames_bucket: str) -> st.SearchStrategy[str]:
    return st.one_of(
        st.builds(lambda key: f"s3://{frames_bucket}/{key}", st.text(min_size=1, max_size=60)),
        st.sampled_from(["s3://a..b/x", "s3://inctrl-models/checkpoints/latest/heads.safetensors",
                         f"s3://{frames_bucket}/fuzz/good.png", f"s3://{frames_bucket}/fuzz/../x", "http://example.com/x.png"]),
        st.text(max_size=30),
    )  # fmt: skip


@st.composite
def frame_messages(draw: st.DrawFn, frames_bucket: str) -> bytes:
    """Frame messages from well-formed to hostile: mutated requests, arbitrary JSON, raw bytes."""
    kind = draw(st.sampled_from(["request"] * 8 + ["json", "bytes"]))
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    if kind == "json":
        return json.dumps(draw(_json_values)).encode()
    document: dict[str, object] = {
        "frame_id": draw(_hostile_names if draw(_rarely) else _valid_names),
        "domain": draw(_domains),
        "line": draw(_hostile_names if draw(_rarely) else _valid_names),
        "timestamp": draw(_timestamps),
    }  # fmt: skip
    source = draw(st.sampled_from(["inline", "inline", "inline", "inline", "uri", "both", "none"]))
    if source in {"inline", "both"}:
        document["image"] = base64.b64encode(draw(image_files())).decode()
    if source in {"uri", "both"}:
        document["image_uri"] = draw(_uris(frames_bucket))
    if draw(_rarely):
        document[draw(st.sampled_from(sorted(document)))] = draw(_json_values)  # a type violation
    if draw(_rarely):
        document[draw(st.text(min_size=1, max_size=30))] = draw(_json_values)  # an extra field
    payload = json.dumps(document).encode()
    if draw(_rarely):
        payload = payload[: draw(st.integers(0, len(payload)))]
    return payload


def record(value: bytes, offset: int = 0) -> ConsumerRecord:
    return ConsumerRecord("frames", 0, -1, offset, 0, 0, None, value, [], None, -1, len(value), -1)


def check_handled(value: bytes, decoder: FrameRecordDecoder, letters: DeadLetterBuilder, settings_: ServiceSettings,
                  store: ObjectStore, tally: Counter[str]) -> None:  # fmt: skip
    item = decoder.decode(record(value))
    if isinstance(item, DecodedFrame):
        image = item.image
        assert image.dtype == np.float32 and image.ndim == 3 and image.shape[0] == 3
        assert np.isfinite(image).all() and image.min() >= 0.0 and image.max() <= 1.0
        tally["decoded"] += 1
        return
    assert isinstance(item, RecordRejected)
    assert item.reason != DeadLetterReason.INTERNAL_ERROR, item.detail
    letter = letters.build(record(value), item.reason, item.detail)
    assert len(letter.to_bytes()) <= settings_.max_message_bytes
    assert original_of(DeadLetter.from_bytes(letter.to_bytes()), store)[1] == value
    tally[item.reason.value] += 1


def _fuzz(service_settings: ServiceSettings, object_store: ObjectStore, examples: int) -> Counter[str]:
    settings_ = service_settings.model_copy(update={"max_image_object_bytes": 100_000, "dead_letter_payload_max_bytes": 2000})
    object_store.ensure_bucket(settings_.frames_bucket)
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (100, 100, 100)).save(buffer, format="PNG")
    object_store.put_bytes(settings_.frames_bucket, "fuzz/good.png", buffer.getvalue())
    decoder = FrameRecordDecoder(settings_, object_store, known_domains=lambda name: name in {"washer", "fabric"})
    letters = DeadLetterBuilder(settings_, object_store)
    tally: Counter[str] = Counter()

    @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])  # fmt: skip
    @given(frame_messages(settings_.frames_bucket))
    def property_(value: bytes) -> None:
        check_handled(value, decoder, letters, settings_, object_store, tally)

    property_()
    tried = sum(tally.values())
    print(f"\nfuzzer: {tried} messages through FrameRecordDecoder.decode, {tally['decoded']} decoded, "
          f"dead-lettered by reason {dict(sorted((k, v) for k, v in tally.items() if k != 'decoded'))}, 0 exceptions")  # fmt: skip
    return tally


def test_fuzzed_records_always_decode_or_get_a_reason(service_settings: ServiceSettings, object_store: ObjectStore) -> None:
    tally = _fuzz(service_settings, object_store, FAST_EXAMPLES)
    assert sum(tally.values()) >= FAST_EXAMPLES // 2 and tally["decoded"] > 0 and len(tally) >= 4


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_ten_thousand_fuzzed_records(service_settings: ServiceSettings, object_store: ObjectStore) -> None:
    tally = _fuzz(service_settings, object_store, int(os.environ.get("INCTRL_FUZZ_EXAMPLES", FULL_EXAMPLES)))
    assert sum(tally.values()) >= FULL_EXAMPLES and tally["decoded"] > 0


@pytest.mark.slow
def test_hundreds_of_fuzzed_messages_through_the_real_broker(
    service_settings: ServiceSettings,
    object_store: ObjectStore,
    statistics_inspector: ModuleType,
    read_topic: Callable[..., list[bytes]],
) -> None:
    settings_ = service_settings.model_copy(update={"max_image_object_bytes": 100_000, "max_poll_records": 16})
    values: list[bytes] = []

    @settings(max_examples=300, deadline=None, database=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])  # fmt: skip
    @given(frame_messages(settings_.frames_bucket))
    def collect(value: bytes) -> None:
        values.append(value)

    collect()
    send_raw(settings_, [(None, value) for value in values])
    with FrameConsumer.connect(settings_, statistics_inspector.inspect_by_statistics, object_store) as consumer:
        stats = consumer.run(max_frames=len(values), idle_timeout_s=60)
    assert stats.handled == len(values)
    letters = [DeadLetter.from_bytes(v) for v in read_topic(settings_.dead_letter_topic, sum(stats.dead_letters.values()))]
    results = [InspectionResult.from_bytes(v) for v in read_topic(settings_.results_topic, stats.results)]
    assert len(letters) + len(results) == len(values)
    assert "internal_error" not in stats.dead_letters
    print(f"\nfuzzed through the broker: {len(values)} messages, {len(results)} results, "
          f"dead letters {dict(sorted(stats.dead_letters.items()))}, 0 consumer exits")  # fmt: skip
