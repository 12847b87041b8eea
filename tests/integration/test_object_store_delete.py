"""ObjectStore.delete / delete_prefix and `inctrl domain delete` against the real local S3 server."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from minio.error import S3Error
from typer.testing import CliRunner

from model import InCTRLv2, InCTRLv2Config
from services.storage.object_store import ObjectStore
from services.registry.domain_registry import DomainRegistry
from services.registry.records import UnknownDomainError
from services.registry.commands import domain_app
from services.settings import ServiceSettings
from inctrl.dev.local_stack import StackEndpoints

pytestmark = pytest.mark.integration


def test_delete_removes_one_object_and_tolerates_a_missing_one(object_store: ObjectStore, bucket_name: str) -> None:
    object_store.put_bytes(bucket_name, "frames/a.png", b"a")
    object_store.put_bytes(bucket_name, "frames/b.png", b"b")
    object_store.delete(bucket_name, "frames/a.png")
    assert object_store.list_keys(bucket_name) == ["frames/b.png"]
    object_store.delete(bucket_name, "frames/a.png")  # a replayed delete is not an error
    assert object_store.list_keys(bucket_name) == ["frames/b.png"]


def test_delete_prefix_removes_everything_under_it_and_nothing_beside_it(object_store: ObjectStore, bucket_name: str) -> None:
    inside = [f"registry/capsule/v{v}/{name}" for v in (1, 2) for name in ("domain.json", "bank.safetensors")]
    inside += ["registry/capsule/current.json"]
    beside = ["registry/capsule-2/current.json", "registry/capsules.txt", "other/capsule/x"]
    for key in inside + beside:
        object_store.put_bytes(bucket_name, key, key.encode())
    assert object_store.delete_prefix(bucket_name, "registry/capsule/") == len(inside)
    assert object_store.list_keys(bucket_name) == sorted(beside)
    assert object_store.delete_prefix(bucket_name, "registry/capsule/") == 0


def test_delete_prefix_refuses_bad_requests(object_store: ObjectStore, bucket_name: str, unique_name: Callable[[str], str]) -> None:
    object_store.put_bytes(bucket_name, "keep.txt", b"x")
    with pytest.raises(ValueError, match="non-empty prefix"):
        object_store.delete_prefix(bucket_name, "")
    assert object_store.list_keys(bucket_name) == ["keep.txt"]
    with pytest.raises(S3Error) as missing:
        object_store.delete_prefix(unique_name("no-such-bucket"), "x/")
    assert missing.value.code == "NoSuchBucket"


def test_domain_delete_command_removes_every_version(
    service_settings: ServiceSettings, stack_endpoints: StackEndpoints, unique_name: Callable[[str], str]
) -> None:
    store = ObjectStore.from_settings(service_settings)
    registry = DomainRegistry(store, f"s3://{unique_name('models')}/registry/")
    detector = InCTRLv2(InCTRLv2Config(backbone="tiny", pretrained=None))
    rng = np.random.default_rng(0)
    references = [rng.random((3, 32, 32), dtype=np.float32) for _ in range(2)]
    registry.register("capsule", "capsule", references, detector, threshold=0.5)
    registry.register("capsule", "capsule", references, detector, threshold=0.6)
    registry.register("capsule-2", "capsule", references, detector, threshold=0.5)
    objects = len(store.list_keys(registry.bucket, registry.uri.split("/", 3)[3] + "capsule/"))

    runner = CliRunner()
    result = runner.invoke(domain_app, ["delete", "capsule", "--registry", registry.uri], env=stack_endpoints.environment())
    assert result.exit_code == 0, result.output
    assert f"deleted capsule ({objects - 1} objects)" in result.output  # current.json stays, as the tombstone
    with pytest.raises(UnknownDomainError):
        registry.show("capsule")
    assert [record.name for record in registry.list()] == ["capsule-2"]
    again = runner.invoke(domain_app, ["delete", "capsule", "--registry", registry.uri], env=stack_endpoints.environment())
    assert again.exit_code != 0 and "capsule" in again.output
