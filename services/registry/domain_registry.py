"""Domain registry: each domain's prompt bank (reference features), threshold and version, kept in S3.

Layout under the registry prefix (settings.registry_prefix, e.g. s3://inctrl-models/registry/):

    {domain}/v{N}/references/{i}.png   the K reference images (8-bit PNG, bank order), so a version can be
                                       extended (add_references) without the original files
    {domain}/v{N}/calibration/{i}.png  the separate normal set the threshold was calibrated on, if any
    {domain}/v{N}/defects/{i}.png      defect images the recall at the threshold was measured on, if any
    {domain}/v{N}/bank.safetensors     PromptBank.to_bytes(): the features, self-describing
    {domain}/v{N}/domain.json          DomainRecord: class name, K, target FPR, thresholds, who/when/why, parent
                                       version, sha256 of the bank; written last: a version is complete once it exists
    {domain}/current.json              DomainPointer: the serving version and the sha256 of its domain.json,
                                       the domain's version counter, and after a delete its tombstone

Versions are never overwritten and never reused: replacing or extending a domain's references writes a new
version and then moves the pointer, so replicas that re-read current.json pick the new bank up without a
restart. Rolling back (activate) only moves the pointer.

Concurrency. Every change of current.json is a compare-and-swap: read it with its ETag, compute the new
pointer, PUT it with If-Match (If-None-Match: * when absent), and on 412 re-read and decide again. SeaweedFS
(4.48, checked here), MinIO and AWS S3 honour both headers on PUT; a server that ignored them would turn
every guarantee below into last-writer-wins, so each registry checks once, before its first write, that a
second If-None-Match create is refused, and refuses to write otherwise. On that primitive:
- a version number is allocated by bumping current.json's counter (last_version), so two writers never
  share one, and a delete keeps the counter (the pointer becomes a tombstone): numbers are never reused and
  a cache keyed by version never serves a deleted bank under a new registration;
- a version's objects are created with If-None-Match, so nothing ever overwrites them;
- register moves the pointer to its version whatever is current (the last to finish serves); add_references
  only if the version it extended is still current, else it rebuilds on the new current version (the stale
  version stays stored, never served unless activated); activate only if the pointer did not move between
  its read and its write (and, given expected_version, only from that version), else ConcurrentUpdateError;
- a registration whose version a concurrent delete covered is refused rather than resurrected half-swept.
The limit: the guarantee covers writers going through this protocol on a server that honours conditional
PUT. Objects changed behind it are caught by digests (the pointer's sha256 of domain.json, the record's
sha256 of the bank) when a version is loaded, and refused as CorruptDomainError; an old pointer without a
digest (written before it existed) is trusted by version alone until its next move.

Thresholds are given or calibrated from normal images only (no defects are needed to register a domain):
calibrate_threshold (services/registry/calibration.py, the statistics in model/calibration.py) scores a separate normal set against the full bank, or each of
the K references and their nuisance views against a bank of the other K-1 (leave-one-out: the K encodes
that also build the stored bank, plus the views'), and sets the image threshold
for a target false-positive rate (default 1%), the pixel threshold (area, boxes, overlay outline) and the
map's display range; defect images, when given, only report the recall that threshold implies. The target
and the defect images are kept with the version, so add_references recalibrates for the same target and
reports the recall on the same defects (plus any it is given).
"""
from __future__ import annotations

import hashlib
import logging
import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np
import torch
from minio.error import S3Error
from pydantic import ValidationError

from model import InCTRLv2, PromptBank
from model.calibration import DEFAULT_TARGET_FPR
from services.registry.calibration import calibrate_threshold
from services.registry.records import (
    ConcurrentUpdateError,
    CorruptDomainError,
    DomainPointer,
    DomainRecord,
    RegisteredDomain,
    RegistryError,
    UnknownDomainError,
    check_domain_name,
)
from services.imaging.decoding import ImageDecodeError, decode_image
from services.imaging.geometry import stack_for_backbone
from services.registry.references import ReferenceImages, registry_prefix
from services.serving.settings import ServingSettings
from services.storage.object_store import ObjectStore, PreconditionFailed

logger = logging.getLogger(__name__)

DEFAULT_MAX_REFERENCES: int = ServingSettings.model_fields["max_references"].default
_VERSION_DIR = re.compile(r"^v(\d+)/")
_VERSION_RECORD = re.compile(r"^v(\d+)/domain\.json$")
_MISSING = {"NoSuchKey", "NoSuchObject", "NotFound"}
# Compare-and-swap contention: each lost attempt means another writer's attempt landed, so a few dozen
# attempts cover that many simultaneous writers; jittered so the losers do not collide again in step.
_CAS_ATTEMPTS = 50
_CAS_BACKOFF_S = 0.02
# add_references rebuilds on the new current version when another change lands first; more is a storm.
_REBASE_ATTEMPTS = 3


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _check_target_fpr(name: str, target_fpr: float) -> None:
    if not 0.0 < target_fpr < 0.5:
        raise RegistryError(f"domain {name!r}: target false-positive rate {target_fpr} is outside (0, 0.5)")


@dataclass(frozen=True)
class _StoredRecord:
    record: DomainRecord
    digest: str  # sha256 of its domain.json


class _ParentMoved(Exception):
    """add_references: the version it extended is no longer current."""


class _Deleted(Exception):
    """A delete covered the version being stored before its pointer move."""


class DomainRegistry:
    """Registered domains under one s3:// prefix; safe for concurrent writers (see the module docstring)."""

    def __init__(self, store: ObjectStore, prefix: str, max_references: int = DEFAULT_MAX_REFERENCES) -> None:
        if max_references < 1:
            raise ValueError(f"max_references must be >= 1, got {max_references}")
        self._store = store
        location = registry_prefix(prefix)
        self.bucket, self._prefix = location.bucket, location.key
        self.uri = f"s3://{self.bucket}/{self._prefix}"
        self.max_references = max_references
        self._conditional_writes_checked = False

    def _key(self, domain: str, *parts: str) -> str:
        return f"{self._prefix}{domain}/" + "/".join(parts)

    # -- writes -----------------------------------------------------------------------------------------
    def register(
        self,
        name: str,
        class_name: str,
        images: Sequence[np.ndarray | torch.Tensor],
        detector: InCTRLv2,
        threshold: float | None = None,
        calibration_images: Sequence[np.ndarray | torch.Tensor] | None = None,
        source: str = "<memory>",
        actor: str = "cli",
        note: str | None = None,
        target_fpr: float = DEFAULT_TARGET_FPR,
        defect_images: Sequence[np.ndarray | torch.Tensor] | None = None,
    ) -> DomainRecord:
        """Build the bank from K >= 1 normal images, store it as a new version and make that current.

        The image threshold is calibrated for `target_fpr` unless given; `defect_images` only measure the
        recall at that threshold (calibration.recall) and are kept with the version for later recalibrations.
        """
        check_domain_name(name)
        if not class_name.strip():
            raise RegistryError(f"domain {name!r}: class name is empty")
        if not images:
            raise RegistryError(f"domain {name!r}: no reference images")
        self._check_reference_count(name, len(images))
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise RegistryError(f"domain {name!r}: threshold {threshold} is outside [0, 1]")
        _check_target_fpr(name, target_fpr)
        size = detector.backbone.image_size
        stack_for_backbone(images, size, "reference images")  # refuses malformed images before anything is encoded
        references = ReferenceImages.encode(images)
        normals = ReferenceImages.checked(calibration_images, size, "calibration images")
        defects = ReferenceImages.checked(defect_images, size, "defect images")
        self._check_conditional_writes()
        return self._store_version(
            name, class_name, references, normals, defects, detector, threshold, target_fpr, source, actor, note,
            parent_version=None,
        )  # fmt: skip

    def add_references(
        self,
        name: str,
        images: Sequence[np.ndarray | torch.Tensor],
        detector: InCTRLv2,
        actor: str,
        note: str | None = None,
        source: str = "<review>",
        target_fpr: float | None = None,
        defect_images: Sequence[np.ndarray | torch.Tensor] | None = None,
    ) -> DomainRecord:
        """A new version: the current version's references plus `images`, recalibrated, made current.

        A given threshold stays as given; a calibrated one is recalibrated the way it was (on the stored
        normal set, or leave-one-out), for `target_fpr` or else the current version's target. The recall is
        measured on the current version's defect images plus `defect_images`. If another change lands
        first, this rebuilds on the new current version.
        """
        check_domain_name(name)
        if not images:
            raise RegistryError(f"domain {name!r}: no reference images to add")
        if target_fpr is not None:
            _check_target_fpr(name, target_fpr)
        size = detector.backbone.image_size
        stack_for_backbone(images, size, "added reference images")
        added = ReferenceImages.encode(images)
        added_defects = ReferenceImages.checked(defect_images, size, "defect images")
        self._check_conditional_writes()
        for attempt in range(1, _REBASE_ATTEMPTS + 1):
            parent = self.show(name)
            if not parent.references:
                raise RegistryError(
                    f"domain {name!r} v{parent.version} was registered before reference images were kept; "
                    "register it again with all its reference images"
                )
            self._check_reference_count(name, parent.shots + len(added.files))
            references = self._stored_images(parent, "references", parent.references) + added
            normals = self._stored_images(parent, "calibration", parent.calibration_images) if parent.calibration_images else None
            defects = self._stored_images(parent, "defects", parent.defect_images) if parent.defect_images else None
            if added_defects is not None:
                defects = added_defects if defects is None else defects + added_defects
            threshold = parent.threshold if parent.calibration.method == "given" else None
            try:
                return self._store_version(
                    name, parent.class_name, references, normals, defects, detector, threshold,
                    parent.target_fpr if target_fpr is None else target_fpr, source, actor, note, parent_version=parent.version,
                )  # fmt: skip
            except _ParentMoved:
                logger.info("domain changed while adding references, rebuilding", extra={"domain": name, "attempt": attempt})
        raise ConcurrentUpdateError(f"domain {name!r} changed under {_REBASE_ATTEMPTS} attempts to add references; try again")

    def activate(self, name: str, version: int, actor: str, expected_version: int | None = None) -> DomainRecord:
        """Make a stored version current again (rollback or roll-forward) by compare-and-swap of current.json.

        Refused with ConcurrentUpdateError, changing nothing, when the current version moves between this
        call's read and its write, or (given expected_version) when that is not the current version.
        """
        check_domain_name(name)
        target = self._read_record(name, version)
        self._check_conditional_writes()
        seen: list[int] = []

        def point(current: DomainPointer | None) -> DomainPointer:
            if current is None or current.version is None:
                raise UnknownDomainError(f"domain {name!r} is not registered in {self.uri}")
            if version <= current.deleted_through:
                raise UnknownDomainError(f"domain {name!r} v{version} was deleted")
            if expected_version is not None and current.version != expected_version:
                raise ConcurrentUpdateError(
                    f"domain {name!r}: v{current.version} is current, not v{expected_version}; v{version} was not activated"
                )
            seen.append(current.version)
            if current.version != seen[0]:
                raise ConcurrentUpdateError(
                    f"domain {name!r} moved from v{seen[0]} to v{current.version} (by {current.actor}) "
                    f"while v{version} was being activated; nothing changed"
                )
            return self._pointer(current, version=version, digest=target.digest, actor=actor)

        self._compare_and_swap(name, point)
        logger.info("domain activated", extra={"domain": name, "version": version, "previous": seen[0], "actor": actor})
        return target.record

    def delete(self, name: str, actor: str = "cli") -> int:
        """Remove every version of a domain; returns the objects removed.

        The pointer becomes a tombstone first (readers stop at once), keeping the version counter, so the
        next registration gets a higher number; then the deleted versions' objects go.
        """
        check_domain_name(name)
        self._check_conditional_writes()
        stored = max(self._version_numbers(name, _VERSION_DIR), default=0)

        def tombstone(current: DomainPointer | None) -> DomainPointer:
            if current is None or current.version is None:
                raise UnknownDomainError(f"domain {name!r} is not registered in {self.uri}")
            through = max(current.next_version() - 1, stored)
            return self._pointer(current, version=None, digest=None, last_version=through, deleted_through=through, actor=actor)

        pointer = self._compare_and_swap(name, tombstone)
        base = self._key(name)
        doomed = []
        for key in self._keys(base):
            match = _VERSION_DIR.match(key[len(base) :])
            if match and int(match.group(1)) <= pointer.deleted_through:
                doomed.append(key)
        for key in doomed:
            self._store.delete(self.bucket, key)
        logger.info("domain deleted", extra={"domain": name, "objects": len(doomed), "through": pointer.deleted_through, "actor": actor})
        return len(doomed)

    # -- reads ------------------------------------------------------------------------------------------
    def current(self, name: str) -> DomainPointer:
        """current.json of a serving domain; UnknownDomainError when it has none (never registered or deleted)."""
        check_domain_name(name)
        pointer, _ = self._read_pointer(name)
        if pointer is None or pointer.version is None:
            raise UnknownDomainError(f"domain {name!r} is not registered in {self.uri}")
        return pointer

    def current_version(self, name: str) -> int:
        """The version current.json points at; UnknownDomainError when there is none."""
        version = self.current(name).version
        assert version is not None  # current() refuses a pointer without one
        return version

    def versions(self, name: str) -> list[int]:
        """Complete, not deleted versions of a domain, ascending."""
        pointer, _ = self._read_pointer(name)
        deleted = pointer.deleted_through if pointer else 0
        return sorted(v for v in self._version_numbers(name, _VERSION_RECORD) if v > deleted)

    def history(self, name: str) -> list[DomainRecord]:
        """Every stored version's record, ascending (the current one among them; see current_version)."""
        check_domain_name(name)
        if self._read_pointer(name)[0] is None:
            raise UnknownDomainError(f"domain {name!r} is not registered in {self.uri}")
        return [self.show(name, version) for version in self.versions(name)]

    def show(self, name: str, version: int | None = None) -> DomainRecord:
        """The record of a version (default: the current one)."""
        return self._read_record(name, version).record

    def reference_images(self, name: str, version: int | None = None) -> list[tuple[str, bytes]]:
        """A version's reference images (default: the current one's) as stored, (file name, 8-bit PNG) in bank
        order; empty for a version registered before reference images were kept."""
        record = self.show(name, version)
        return self._stored_files(record, "references", record.references)

    def load(self, name: str, version: int | None = None) -> RegisteredDomain:
        """Record and bank of a version (default: the current one), checked against their digests."""
        found = self._read_record(name, version)
        record = found.record
        key = self._key(name, f"v{record.version}", "bank.safetensors")
        data = self._get_bytes(name, key)
        if record.bank_sha256 is not None and _sha256(data) != record.bank_sha256:
            raise CorruptDomainError(f"domain {record.reference_version}: s3://{self.bucket}/{key} does not match the sha256 in its domain.json")
        bank = PromptBank.from_bytes(data, source=f"s3://{self.bucket}/{key}")
        return RegisteredDomain(record=record, bank=bank, digest=found.digest)

    def list(self) -> list[DomainRecord]:
        """Current records of every serving domain, by name."""
        pointers = [key for key in self._keys(self._prefix) if key.endswith("/current.json")]
        names = sorted(key[len(self._prefix) :].split("/", 1)[0] for key in pointers)
        records = []
        for name in names:
            try:
                records.append(self.show(name))
            except UnknownDomainError:  # deleted: its pointer is a tombstone
                continue
        return records

    # -- internals --------------------------------------------------------------------------------------
    def _check_reference_count(self, name: str, count: int) -> None:
        if count > self.max_references:
            raise RegistryError(
                f"domain {name!r}: {count} reference images, above the limit of {self.max_references} per version (max_references)"
            )

    def _check_conditional_writes(self) -> None:
        """Refuse to write through a server that ignores If-None-Match (see the module docstring)."""
        if self._conditional_writes_checked:
            return
        self._store.ensure_bucket(self.bucket)
        key = f"{self._prefix}.conditional-write-check"
        self._store.put_bytes(self.bucket, key, b"")
        try:
            self._store.put_bytes_if(self.bucket, key, b"second", etag=None)
        except PreconditionFailed:
            self._conditional_writes_checked = True
            return
        raise RegistryError(
            f"the S3 server {self._store.endpoint} ignores If-None-Match on PUT; the registry {self.uri} needs "
            "conditional writes to keep concurrent changes apart and does not write without them"
        )

    def _store_version(
        self,
        name: str,
        class_name: str,
        references: ReferenceImages,
        normals: ReferenceImages | None,
        defects: ReferenceImages | None,
        detector: InCTRLv2,
        threshold: float | None,
        target_fpr: float,
        source: str,
        actor: str,
        note: str | None,
        parent_version: int | None,
    ) -> DomainRecord:
        """Build, calibrate, allocate a number, create the objects, move the pointer; returns the record."""
        size = detector.backbone.image_size
        reference_batch = stack_for_backbone(references.arrays, size, "reference images")
        normal_batch = stack_for_backbone(normals.arrays, size, "calibration images") if normals else None
        defect_batch = stack_for_backbone(defects.arrays, size, "defect images") if defects else None
        bank, threshold, calibration = calibrate_threshold(
            detector, reference_batch, class_name, normal_batch, target_fpr=target_fpr, defects=defect_batch, threshold=threshold
        )
        bank_bytes = bank.to_bytes()
        version = self._allocate(name, actor)
        record = DomainRecord(
            name=name, version=version, class_name=class_name, shots=bank.shots, threshold=threshold,
            calibration=calibration, backbone_id=bank.backbone_id, created=datetime.now(timezone.utc), source=source,
            actor=actor, note=note, parent_version=parent_version, references=references.names(),
            calibration_images=normals.names() if normals else [], target_fpr=target_fpr,
            defect_images=defects.names() if defects else [], bank_sha256=_sha256(bank_bytes),
        )  # fmt: skip
        document = record.model_dump_json().encode()
        objects = [
            (self._key(name, f"v{version}", folder, f), data, "image/png")
            for folder, files, images in (
                ("references", record.references, references), ("calibration", record.calibration_images, normals),
                ("defects", record.defect_images, defects),
            )
            for f, data in zip(files, images.files if images else [])
        ]  # fmt: skip
        objects += [
            (self._key(name, f"v{version}", "bank.safetensors"), bank_bytes, "application/octet-stream"),
            (self._key(name, f"v{version}", "domain.json"), document, "application/json"),  # last: the version is complete
        ]
        for key, data, content_type in objects:
            self._create(name, key, data, content_type)
        digest = _sha256(document)

        def point(current: DomainPointer | None) -> DomainPointer:
            if current is None or version <= current.deleted_through:
                raise _Deleted()
            if parent_version is not None and current.version != parent_version:
                raise _ParentMoved()
            return self._pointer(current, version=version, digest=digest, actor=actor)

        try:
            self._compare_and_swap(name, point)
        except _Deleted:
            for key, _, _ in objects:  # never served: leave nothing of it behind
                self._store.delete(self.bucket, key)
            raise RegistryError(f"domain {name!r} was deleted while v{version} was being stored; nothing is served") from None
        logger.info(
            "domain version stored",
            extra={
                "domain": name, "version": version, "parent": parent_version, "shots": bank.shots, "threshold": threshold,
                "method": calibration.method, "target_fpr": target_fpr, "recall": calibration.recall, "actor": actor,
            },
        )  # fmt: skip
        return record

    def _allocate(self, name: str, actor: str) -> int:
        """A version number no other writer gets, before or after: the pointer's counter, bumped by CAS."""
        stored: list[int] = []

        def bump(current: DomainPointer | None) -> DomainPointer:
            if current is None or current.last_version == 0:  # a new domain, or a pointer from before the counter
                if not stored:
                    stored.append(max(self._version_numbers(name, _VERSION_DIR), default=0))
                floor = max(stored[0], current.next_version() - 1 if current else 0)
            else:
                floor = current.next_version() - 1
            if current is None:
                return DomainPointer(version=None, updated=datetime.now(timezone.utc), last_version=floor + 1, actor=actor)
            return self._pointer(current, last_version=floor + 1)

        return self._compare_and_swap(name, bump).last_version

    @staticmethod
    def _pointer(current: DomainPointer, **changes: Any) -> DomainPointer:
        """current with `changes`, a fresh revision and time, validated."""
        fields = current.model_dump(exclude={"revision", "updated"})
        return DomainPointer.model_validate({**fields, **changes, "updated": datetime.now(timezone.utc)})

    def _compare_and_swap(self, name: str, change: Callable[[DomainPointer | None], DomainPointer]) -> DomainPointer:
        """Replace current.json by change(what it holds now), conditionally on it not changing meanwhile.

        `change` may raise to refuse; it runs again on the fresh pointer after every lost race.
        """
        key = self._key(name, "current.json")
        for attempt in range(_CAS_ATTEMPTS):
            current, etag = self._read_pointer(name)
            proposed = change(current)
            payload = proposed.model_dump_json().encode()
            try:
                self._store.put_bytes_if(self.bucket, key, payload, etag, "application/json")
                return proposed
            except PreconditionFailed:
                if self._holds(key, payload):  # our write landed and only its answer was lost
                    return proposed
            time.sleep(random.uniform(0.0, _CAS_BACKOFF_S * (attempt + 1)))
        raise ConcurrentUpdateError(f"domain {name!r}: current.json kept changing under {_CAS_ATTEMPTS} conditional writes")

    def _create(self, name: str, key: str, data: bytes, content_type: str) -> None:
        """Create an object that must not exist yet (version objects are written once)."""
        try:
            self._store.put_bytes_if(self.bucket, key, data, None, content_type)
        except PreconditionFailed as error:
            if not self._holds(key, data):
                raise ConcurrentUpdateError(
                    f"domain {name!r}: s3://{self.bucket}/{key} already exists with other content; its version was "
                    "written by a writer outside this registry's protocol"
                ) from error

    def _holds(self, key: str, data: bytes) -> bool:
        try:
            return self._store.get_bytes(self.bucket, key) == data
        except S3Error as error:
            if error.code in _MISSING:
                return False
            raise

    def _read_pointer(self, name: str) -> tuple[DomainPointer | None, str | None]:
        key = self._key(name, "current.json")
        try:
            data, etag = self._store.get_bytes_and_etag(self.bucket, key)
        except S3Error as error:
            if error.code in _MISSING or error.code == "NoSuchBucket":
                return None, None
            raise
        try:
            return DomainPointer.model_validate_json(data), etag
        except ValidationError as error:
            raise CorruptDomainError(f"domain {name!r}: s3://{self.bucket}/{key} is not a valid pointer: {error}") from error

    def _read_record(self, name: str, version: int | None) -> _StoredRecord:
        """A version's record (default: the current one), checked against the pointer's digest when it serves."""
        check_domain_name(name)
        pointer, _ = self._read_pointer(name)
        if pointer is None or (version is None and pointer.version is None):
            raise UnknownDomainError(f"domain {name!r} is not registered in {self.uri}")
        version = version or pointer.version
        assert version is not None
        if version <= pointer.deleted_through:
            raise UnknownDomainError(f"domain {name!r} v{version} was deleted")
        key = self._key(name, f"v{version}", "domain.json")
        data = self._get_bytes(name, key)
        digest = _sha256(data)
        if pointer.version == version and pointer.digest is not None and digest != pointer.digest:
            raise CorruptDomainError(f"domain {name}/v{version}: s3://{self.bucket}/{key} does not match the sha256 in current.json")
        try:
            record = DomainRecord.model_validate_json(data)
        except ValidationError as error:
            raise CorruptDomainError(f"domain {name}/v{version}: s3://{self.bucket}/{key} is not a valid record: {error}") from error
        if (record.name, record.version) != (name, version):
            raise CorruptDomainError(f"domain {name}/v{version}: s3://{self.bucket}/{key} holds {record.reference_version}")
        return _StoredRecord(record, digest)

    def _stored_files(self, record: DomainRecord, folder: str, files: Sequence[str]) -> list[tuple[str, bytes]]:
        """A version's stored PNGs under v{N}/{folder}/, as (file name, bytes)."""
        return [(name, self._get_bytes(record.name, self._key(record.name, f"v{record.version}", folder, name))) for name in files]

    def _stored_images(self, record: DomainRecord, folder: str, files: Sequence[str]) -> ReferenceImages:
        """A version's stored PNGs, as the images its bank was built from."""
        arrays, data = [], []
        for file_name, png in self._stored_files(record, folder, files):
            try:
                arrays.append(decode_image(png))
            except ImageDecodeError as error:
                key = self._key(record.name, f"v{record.version}", folder, file_name)
                raise CorruptDomainError(f"domain {record.reference_version}: s3://{self.bucket}/{key}: {error}") from error
            data.append(png)
        return ReferenceImages(arrays, data)

    def _version_numbers(self, name: str, pattern: re.Pattern[str]) -> set[int]:
        base = self._key(name)
        matches = (pattern.match(key[len(base) :]) for key in self._keys(base))
        return {int(match.group(1)) for match in matches if match}

    def _keys(self, prefix: str) -> list[str]:
        try:
            return self._store.list_keys(self.bucket, prefix)
        except S3Error as error:
            if error.code == "NoSuchBucket":  # nothing registered yet
                return []
            raise

    def _get_bytes(self, name: str, key: str) -> bytes:
        try:
            return self._store.get_bytes(self.bucket, key)
        except S3Error as error:
            if error.code in _MISSING or error.code == "NoSuchBucket":
                raise UnknownDomainError(f"domain {name!r} is not registered in {self.uri} (missing {key})") from error
            raise
