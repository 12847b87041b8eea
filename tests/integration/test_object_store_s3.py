"""ObjectStore against the real local S3 server, including an outage in the middle of a write."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
from minio.error import S3Error

from services.results.keys import result_keys
from services.storage.object_store import ObjectStore, ObjectStoreUnavailable
from services.storage.retry import RetryPolicy
from services.storage.uri import S3Uri
from inctrl.dev.local_stack import LocalStack, StackEndpoints

pytestmark = pytest.mark.integration


def make_store(endpoints: StackEndpoints, deadline_s: float) -> ObjectStore:
    return ObjectStore(
        endpoints.s3_endpoint,
        endpoints.s3_access_key.get_secret_value(),
        endpoints.s3_secret_key.get_secret_value(),
        retry=RetryPolicy(deadline_s=deadline_s, initial_backoff_s=0.1, max_backoff_s=0.5),
    )


def test_result_keys_are_deterministic_and_dated_in_utc() -> None:
    late_evening_east = datetime(2026, 3, 1, 23, 30, tzinfo=timezone(timedelta(hours=-5)))
    keys = result_keys("washer", "line-3", late_evening_east, "cam1-0001")
    assert keys.result == "results/washer/line-3/2026-03-02/cam1-0001/result.json"
    assert keys.map.endswith("/cam1-0001/map.png") and keys.overlay.endswith("/cam1-0001/overlay.jpg")
    assert result_keys("washer", "line-3", late_evening_east, "cam1-0001") == keys
    assert S3Uri.parse("s3://bucket-a/x/y.png") == S3Uri("bucket-a", "x/y.png")
    with pytest.raises(ValueError, match="bucket and key"):
        S3Uri.parse("s3://bucket-only")


def test_bytes_and_json_round_trip_and_overwrite(stack_endpoints: StackEndpoints, bucket_name: str) -> None:
    store = make_store(stack_endpoints, deadline_s=10)
    store.ensure_bucket(bucket_name)  # idempotent
    store.put_bytes(bucket_name, "a/b.bin", b"\x00\x01\x02")
    store.put_json(bucket_name, "a/c.json", {"score": 0.25, "tags": ["x"]})
    assert store.get_bytes(bucket_name, "a/b.bin") == b"\x00\x01\x02"
    assert store.get_json(bucket_name, "a/c.json") == {"score": 0.25, "tags": ["x"]}
    store.put_bytes(bucket_name, "a/b.bin", b"replayed")
    assert store.get_bytes(bucket_name, "a/b.bin") == b"replayed"
    assert store.list_keys(bucket_name, "a/") == ["a/b.bin", "a/c.json"]
    assert store.exists(bucket_name, "a/c.json") and not store.exists(bucket_name, "a/missing")


def test_missing_object_fails_at_once_instead_of_retrying(stack_endpoints: StackEndpoints, bucket_name: str) -> None:
    store = make_store(stack_endpoints, deadline_s=20)
    started = time.monotonic()
    with pytest.raises(S3Error) as error:
        store.get_bytes(bucket_name, "no/such/key")
    assert error.value.code == "NoSuchKey"
    assert time.monotonic() - started < 2.0


def test_write_started_during_an_outage_completes_after_restart(
    local_stack: LocalStack, stack_endpoints: StackEndpoints, bucket_name: str
) -> None:
    store = make_store(stack_endpoints, deadline_s=60)
    store.put_bytes(bucket_name, "before-outage", b"kept")
    errors: list[BaseException] = []

    def write() -> None:
        try:
            store.put_bytes(bucket_name, "during-outage", b"not lost")
        except BaseException as error:  # reported to the test thread below
            errors.append(error)

    local_stack.stop_s3()
    try:
        writer = threading.Thread(target=write)
        writer.start()
        writer.join(timeout=1.5)
        assert writer.is_alive(), "the write should stall while S3 is down, not fail or return"
    finally:
        local_stack.start_s3()
    writer.join(timeout=60)
    assert not writer.is_alive() and errors == []
    assert store.get_bytes(bucket_name, "during-outage") == b"not lost"
    assert store.get_bytes(bucket_name, "before-outage") == b"kept"


def test_outage_longer_than_the_deadline_raises(local_stack: LocalStack, stack_endpoints: StackEndpoints) -> None:
    store = make_store(stack_endpoints, deadline_s=1.0)
    local_stack.stop_s3()
    try:
        started = time.monotonic()
        with pytest.raises(ObjectStoreUnavailable, match="still failing after"):
            store.put_bytes("any-bucket", "k", b"v")
        assert 1.0 <= time.monotonic() - started < 5.0
    finally:
        local_stack.start_s3()
