"""Registry integrity on the real local S3 server: versions never reused, CAS pointer moves, content-keyed cache,
reference images kept per version (add_references, activate, history), the K limit, and the domain CLI."""
from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from model import InCTRLv2, InCTRLv2Config
from services.storage.object_store import ObjectStore
from services.registry.domain_registry import DomainRegistry
from services.registry.records import ConcurrentUpdateError, CorruptDomainError, RegistryError, UnknownDomainError
from services.registry.commands import domain_app
from services.serving.bank_cache import BankCache
from services.settings import ServiceSettings
from inctrl.dev.local_stack import StackEndpoints

from .conftest import png_bytes, texture

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def detector() -> InCTRLv2:
    return InCTRLv2(InCTRLv2Config(backbone="tiny", pretrained=None))


@pytest.fixture
def store(service_settings: ServiceSettings) -> ObjectStore:
    return ObjectStore.from_settings(service_settings)


@pytest.fixture
def prefix(unique_name: Callable[[str], str]) -> str:
    return f"s3://{unique_name('models')}/registry/"


@pytest.fixture
def registry(store: ObjectStore, prefix: str) -> DomainRegistry:
    return DomainRegistry(store, prefix)


def quantised(image: np.ndarray) -> np.ndarray:
    """What an 8-bit PNG round trip leaves of an image in [0, 1]."""
    return (np.round(image * 255) / 255).astype(np.float32)


def scores(detector: InCTRLv2, bank, frames: list[np.ndarray]) -> np.ndarray:
    return detector.detect(torch.from_numpy(np.stack(frames)), bank).scores.numpy()


def test_delete_then_register_gets_a_new_version_and_the_cache_drops_the_deleted_bank(
    registry: DomainRegistry, detector: InCTRLv2
) -> None:
    now = [0.0]
    cache = BankCache(registry, detector.device, recheck_s=10.0, clock=lambda: now[0])
    registry.register("alpha", "capsule", [texture(1), texture(2)], detector, threshold=0.5)
    assert cache.get("alpha").bank.shots == 2
    registry.delete("alpha")
    now[0] = 11.0
    with pytest.raises(UnknownDomainError, match="alpha"):
        cache.get("alpha")
    assert cache.cached() == {}
    again = registry.register("alpha", "capsule", [texture(7, stripes=9)], detector, threshold=0.4)
    assert again.version == 2 and registry.current_version("alpha") == 2
    now[0] = 22.0
    served = cache.get("alpha")
    assert (served.record.version, served.bank.shots, served.record.threshold) == (2, 1, 0.4)
    assert [record.version for record in registry.history("alpha")] == [2]
    with pytest.raises(UnknownDomainError, match="alpha"):
        registry.show("alpha", 1)


def test_concurrent_registrations_get_distinct_versions_and_never_mix_objects(
    registry: DomainRegistry, detector: InCTRLv2
) -> None:
    writers = 6
    barrier = threading.Barrier(writers)
    records, errors = {}, []

    def register(i: int) -> None:
        try:
            images = [texture(100 * i + j, stripes=3 + i) for j in range(i + 1)]
            barrier.wait()
            records[i] = registry.register("gamma", "capsule", images, detector, threshold=0.1 + 0.1 * i, actor=f"w{i}")
        except Exception as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=register, args=(i,)) for i in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    versions = sorted(record.version for record in records.values())
    assert versions == list(range(1, writers + 1))
    for i, record in records.items():  # each version's objects are its own writer's
        stored = registry.load("gamma", record.version)
        assert (stored.record.threshold, stored.record.actor, stored.bank.shots) == (pytest.approx(0.1 + 0.1 * i), f"w{i}", i + 1)
    assert registry.current_version("gamma") in versions
    assert [record.version for record in registry.history("gamma")] == versions


def test_add_references_grows_k_recalibrates_and_history_names_every_actor(
    registry: DomainRegistry, detector: InCTRLv2
) -> None:
    first = [texture(i) for i in range(2)]
    registry.register("delta", "capsule", first, detector, actor="alice")
    added = [texture(50 + i) for i in range(2)]
    second = registry.add_references("delta", added, detector, actor="bob", note="frame 17 is fine")
    assert (second.version, second.shots, second.parent_version, second.actor, second.note) == (2, 4, 1, "bob", "frame 17 is fine")
    assert second.calibration.method == "leave-one-out" and len(second.calibration.normal_scores) == 4 + second.calibration.view_scores
    assert registry.current_version("delta") == 2
    frames = [texture(90), texture(91, stripes=9)]
    expected = detector.build_prompt_bank(torch.from_numpy(np.stack([quantised(x) for x in first + added])), "capsule")
    np.testing.assert_allclose(scores(detector, registry.load("delta").bank, frames), scores(detector, expected, frames), atol=1e-5)
    third = registry.add_references("delta", [texture(60)], detector, actor="carol")
    assert (third.version, third.shots, third.parent_version) == (3, 5, 2)
    history = registry.history("delta")
    assert [(r.version, r.shots, r.actor, r.parent_version) for r in history] == [
        (1, 2, "alice", None), (2, 4, "bob", 1), (3, 5, "carol", 2)
    ]  # fmt: skip


def test_concurrent_add_references_lose_no_reviewer_s_images(registry: DomainRegistry, detector: InCTRLv2) -> None:
    registry.register("lam", "capsule", [texture(1), texture(2)], detector, threshold=0.5, actor="alice")
    barrier, errors = threading.Barrier(2), []

    def review(i: int) -> None:
        try:
            barrier.wait()
            registry.add_references("lam", [texture(40 + i)], detector, actor=f"reviewer-{i}")
        except Exception as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=review, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    current = registry.show("lam")
    assert current.shots == 4  # both additions, whichever landed second was rebuilt on the first
    chain = {record.version: record for record in registry.history("lam")}
    assert chain[current.parent_version].shots == 3 and chain[chain[current.parent_version].parent_version].shots == 2


def test_add_references_recalibrates_on_the_stored_normal_set(registry: DomainRegistry, detector: InCTRLv2) -> None:
    normals = [texture(70 + i) for i in range(3)]
    first = registry.register("mu", "capsule", [texture(1), texture(2)], detector, calibration_images=normals)
    assert first.calibration.method == "normal-set" and len(first.calibration_images) == 3
    grown = registry.add_references("mu", [texture(3)], detector, actor="bob")
    assert (grown.shots, grown.calibration.method, len(grown.calibration.normal_scores)) == (3, "normal-set", 3)
    bank = detector.build_prompt_bank(torch.from_numpy(np.stack([quantised(texture(i)) for i in (1, 2, 3)])), "capsule")
    expected = scores(detector, bank, [quantised(x) for x in normals])
    np.testing.assert_allclose(grown.calibration.normal_scores, expected, atol=1e-5)


def test_add_references_keeps_a_given_threshold_and_refuses_an_unknown_domain(
    registry: DomainRegistry, detector: InCTRLv2
) -> None:
    registry.register("eps", "capsule", [texture(1)], detector, threshold=0.42)
    record = registry.add_references("eps", [texture(2)], detector, actor="bob")
    assert (record.shots, record.threshold, record.calibration.method) == (2, 0.42, "given")
    with pytest.raises(UnknownDomainError, match="ghost"):
        registry.add_references("ghost", [texture(2)], detector, actor="bob")


def test_activate_rolls_back_and_detects_a_concurrent_pointer_move(
    registry: DomainRegistry, service_settings: ServiceSettings, prefix: str, detector: InCTRLv2
) -> None:
    for threshold in (0.3, 0.5, 0.7):
        registry.register("zeta", "capsule", [texture(3)], detector, threshold=threshold)
    rolled = registry.activate("zeta", 1, actor="bob")
    assert rolled.version == 1 and registry.current_version("zeta") == 1 and registry.show("zeta").threshold == 0.3
    with pytest.raises(ConcurrentUpdateError, match="zeta"):
        registry.activate("zeta", 2, actor="bob", expected_version=3)  # bob saw v3 current; it is v1 now
    assert registry.current_version("zeta") == 1
    with pytest.raises(UnknownDomainError, match="zeta"):
        registry.activate("zeta", 9, actor="bob")

    class InterleavingStore(ObjectStore):
        """The real store; right before the first conditional write of current.json another writer moves it."""

        interleaved = False

        def put_bytes_if(self, bucket: str, key: str, data: bytes, etag: str | None, content_type: str = "application/json") -> str:
            if key.endswith("zeta/current.json") and not self.interleaved:
                self.interleaved = True
                registry.activate("zeta", 3, actor="carol")
            return super().put_bytes_if(bucket, key, data, etag, content_type)

    racing = InterleavingStore.from_settings(service_settings)
    with pytest.raises(ConcurrentUpdateError, match="zeta"):
        DomainRegistry(racing, prefix).activate("zeta", 2, actor="bob")
    assert racing.interleaved and registry.current_version("zeta") == 3  # carol's move stands


def test_a_registration_overtaken_by_a_delete_is_refused(
    registry: DomainRegistry, store: ObjectStore, service_settings: ServiceSettings, prefix: str, detector: InCTRLv2
) -> None:
    registry.register("nu", "capsule", [texture(1)], detector, threshold=0.5)

    class DeletingStore(ObjectStore):
        """The real store; the domain is deleted right before the registration's version objects are written."""

        deleted = False

        def put_bytes_if(self, bucket: str, key: str, data: bytes, etag: str | None, content_type: str = "application/json") -> str:
            if "/nu/v2/" in key and not self.deleted:
                self.deleted = True
                registry.delete("nu")
            return super().put_bytes_if(bucket, key, data, etag, content_type)

    racing = DomainRegistry(DeletingStore.from_settings(service_settings), prefix)
    with pytest.raises(RegistryError, match="'nu' was deleted while v2"):
        racing.register("nu", "capsule", [texture(2)], detector, threshold=0.5)
    with pytest.raises(UnknownDomainError, match="nu"):
        registry.current_version("nu")
    assert store_keys(store, registry, "nu/") == ["nu/current.json"]  # the refused version left nothing behind
    assert registry.register("nu", "capsule", [texture(3)], detector, threshold=0.5).version == 3


def test_reference_limit_refuses_with_the_domain_named(store: ObjectStore, prefix: str, detector: InCTRLv2) -> None:
    registry = DomainRegistry(store, prefix, max_references=3)
    with pytest.raises(RegistryError, match=r"'eta'.*4 reference images.*3"):
        registry.register("eta", "capsule", [texture(i) for i in range(4)], detector, threshold=0.5)
    registry.register("eta", "capsule", [texture(i) for i in range(2)], detector, threshold=0.5)
    with pytest.raises(RegistryError, match=r"'eta'.*4 reference images.*3"):
        registry.add_references("eta", [texture(8), texture(9)], detector, actor="bob")
    assert [record.version for record in registry.history("eta")] == [1]


def test_a_swapped_bank_object_is_refused(registry: DomainRegistry, store: ObjectStore, detector: InCTRLv2) -> None:
    registry.register("theta", "capsule", [texture(1), texture(2)], detector, threshold=0.5)
    other = detector.build_prompt_bank(torch.from_numpy(np.stack([texture(5, stripes=9)])), "capsule")
    store.put_bytes(registry.bucket, f"{registry.uri.split('/', 3)[3]}theta/v1/bank.safetensors", other.to_bytes())
    with pytest.raises(CorruptDomainError, match="theta/v1"):
        registry.load("theta")


def test_records_and_pointers_written_before_still_load_and_extend(
    registry: DomainRegistry, store: ObjectStore, detector: InCTRLv2
) -> None:
    """A version stored by the registry before reference images, actors and digests were kept."""
    base = registry.uri.split("/", 3)[3] + "iota/"
    bank = detector.build_prompt_bank(torch.from_numpy(np.stack([texture(1), texture(2)])), "capsule")
    store.ensure_bucket(registry.bucket)
    store.put_bytes(registry.bucket, base + "v1/bank.safetensors", bank.to_bytes())
    legacy_record = {
        "name": "iota", "version": 1, "class_name": "capsule", "shots": 2, "threshold": 0.5,
        "calibration": {"method": "given", "quantile": None, "margin": None, "normal_scores": []},
        "backbone_id": bank.backbone_id, "created": "2026-11-01T10:00:00Z", "source": "/data/iota",
    }  # fmt: skip
    store.put_json(registry.bucket, base + "v1/domain.json", legacy_record)
    store.put_json(registry.bucket, base + "current.json", {"version": 1, "updated": "2026-11-01T10:00:00Z"})
    assert registry.load("iota").bank.shots == 2 and registry.show("iota").parent_version is None
    with pytest.raises(RegistryError, match="iota.*reference images"):
        registry.add_references("iota", [texture(3)], detector, actor="bob")
    record = registry.register("iota", "capsule", [texture(4)], detector, threshold=0.5)
    assert record.version == 2 and [r.version for r in registry.history("iota")] == [1, 2]


def test_domain_cli_versions_activate_and_add_references(
    registry: DomainRegistry, store: ObjectStore, detector: InCTRLv2, stack_endpoints: StackEndpoints,
    unique_name: Callable[[str], str], tmp_path,
) -> None:  # fmt: skip
    registry.register("kappa", "capsule", [texture(1), texture(2)], detector, actor="alice")
    bucket = unique_name("refs")
    store.ensure_bucket(bucket)
    store.put_bytes(bucket, "kappa/new/a.png", png_bytes(texture(30)))
    checkpoint = detector.save(tmp_path / "checkpoint")
    runner, env = CliRunner(), stack_endpoints.environment()
    grown = runner.invoke(
        domain_app,
        ["add-references", "kappa", "--images", f"s3://{bucket}/kappa/new", "--checkpoint", str(checkpoint),
         "--actor", "bob", "--note", "glare is fine", "--registry", registry.uri],
        env=env,
    )  # fmt: skip
    assert grown.exit_code == 0, grown.output
    assert registry.show("kappa").shots == 3 and registry.show("kappa").note == "glare is fine"
    listed = runner.invoke(domain_app, ["versions", "kappa", "--registry", registry.uri], env=env)
    assert listed.exit_code == 0, listed.output
    lines = listed.output.strip().splitlines()
    assert len(lines) == 2 and "v1" in lines[0] and "alice" in lines[0] and "v2" in lines[1] and "bob" in lines[1]
    assert "*" in lines[1] and "*" not in lines[0]  # the current version is marked
    rolled = runner.invoke(domain_app, ["activate", "kappa", "1", "--actor", "carol", "--registry", registry.uri], env=env)
    assert rolled.exit_code == 0, rolled.output
    assert registry.current_version("kappa") == 1
    missing = runner.invoke(domain_app, ["activate", "kappa", "7", "--registry", registry.uri], env=env)
    assert missing.exit_code != 0 and "kappa" in missing.output


def store_keys(store: ObjectStore, registry: DomainRegistry, under: str) -> list[str]:
    """Keys under the registry prefix, relative to it."""
    base = registry.uri.split("/", 3)[3]
    return [key[len(base) :] for key in store.list_keys(registry.bucket, base + under)]
