"""Domain registry: each domain's prompt bank (reference features), threshold and version, kept in S3.

Layout under the registry prefix (settings.registry_prefix, e.g. s3://inctrl-models/registry/):

    {domain}/v{N}/bank.safetensors   PromptBank.to_bytes(): the features, self-describing
    {domain}/v{N}/domain.json        DomainRecord: class name, K, threshold, backbone id, created, version
    {domain}/current.json            DomainPointer: which version serves; written last, so a reader never
                                     sees a version whose objects are incomplete

Versions are never overwritten: replacing a domain's references writes v{N+1} and then moves the pointer,
so replicas that re-read current.json pick the new bank up without a restart.

Thresholds are given or calibrated from normal images only (no defects are needed to register a domain):
calibrate_threshold (model/calibration.py) scores a separate normal set against the full bank, or each of
the K references against a bank of the other K-1 (leave-one-out, K encodes), and sets the image threshold
for a target false-positive rate (default 1%), the pixel threshold (area, boxes, overlay outline) and the
map's display range; defect images, when given, only report the recall that threshold implies.
"""
from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from minio.error import S3Error
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from model import InCTRLv2, PromptBank
from model.calibration import DEFAULT_TARGET_FPR, CalibrationError, calibrate
from services.deployment_config import DOMAIN_NAME_PATTERN
from services.object_store import ObjectStore
from services.result_encoding import ImageDecodeError, decode_image
from services.serving.image_batch import stack_for_backbone

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
_VERSION_DIR = re.compile(r"^v(\d+)/")
_MISSING = {"NoSuchKey", "NoSuchObject", "NotFound"}


class RegistryError(ValueError):
    """A registry request that cannot be served; the message names the domain and what is wrong."""


class UnknownDomainError(RegistryError, LookupError):
    """The domain has no registered version."""


class ThresholdCalibration(BaseModel):
    """How a domain's thresholds were obtained (model/calibration.py): the image threshold for a target
    false-positive rate, the pixel threshold and the map's display range. Every field added after the first
    records has a default, so older domain.json files still load (their pixel fields are None)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Literal["given", "leave-one-out", "normal-set"]
    quantile: float | None = Field(None, description="Records before target-FPR calibration: the normal-score quantile.")
    margin: float | None = Field(None, description="Records before target-FPR calibration: added to that quantile.")
    normal_scores: list[float] = Field(default_factory=list, description="The normal scores it was set from.")
    target_fpr: float | None = Field(None, gt=0.0, lt=0.5, description="False-positive rate the image threshold aims at.")
    pixel_threshold: float | None = Field(
        None, ge=0.0, le=1.0, description="Map level above which a pixel is anomalous (area, boxes, outline)."
    )
    map_range: tuple[float, float] | None = Field(None, description="Display range of the map's colour scale (low, high).")
    normal_map_maxima: list[float] = Field(default_factory=list, description="Per-image map maxima the pixel threshold was set from.")
    defect_scores: list[float] = Field(default_factory=list, description="Scores of the defect images given at calibration.")
    recall: float | None = Field(
        None, ge=0.0, le=1.0, description="Fraction of those defect images at or above the threshold; None without any."
    )


class DomainRecord(BaseModel):
    """domain.json of one version."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    version: int = Field(ge=1)
    class_name: str
    shots: int = Field(ge=1)
    threshold: float = Field(ge=0.0, le=1.0)
    calibration: ThresholdCalibration
    backbone_id: str
    created: AwareDatetime
    source: str = Field(description="Where the reference images came from (folder or s3:// prefix).")

    @property
    def reference_version(self) -> str:
        """The version tag results carry."""
        return f"{self.name}/v{self.version}"


class DomainPointer(BaseModel):
    """current.json: the version a domain serves."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = Field(ge=1)
    updated: AwareDatetime


@dataclass(frozen=True)
class RegisteredDomain:
    """A domain's record and its bank, as replicas load it."""

    record: DomainRecord
    bank: PromptBank


def check_domain_name(name: str) -> str:
    """Domain names become S3 keys and Serve deployment names: keep them to one safe alphabet."""
    if not re.match(DOMAIN_NAME_PATTERN, name):
        raise RegistryError(
            f"domain name {name!r} must be 1-40 lowercase letters, digits or '-', starting and ending with a letter or digit"
        )
    return name


def split_s3_prefix(uri: str) -> tuple[str, str]:
    """s3://bucket[/prefix] -> (bucket, prefix ending in '/' or empty)."""
    if not uri.startswith("s3://") or not uri[len("s3://") :].split("/", 1)[0]:
        raise RegistryError(f"expected an s3://bucket/prefix URI, got {uri!r}")
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    return bucket, (prefix.rstrip("/") + "/") if prefix.strip("/") else ""


def load_reference_images(source: str, store: ObjectStore | None = None) -> list[np.ndarray]:
    """Every image in a local folder or under an s3:// prefix, sorted by name, as (3, H, W) float32 in [0, 1]."""
    if source.startswith("s3://"):
        if store is None:
            raise RegistryError(f"reading {source} needs an object store")
        bucket, prefix = split_s3_prefix(source)
        keys = [key for key in store.list_keys(bucket, prefix) if Path(key).suffix.lower() in IMAGE_SUFFIXES]
        named = [(f"s3://{bucket}/{key}", lambda key=key: store.get_bytes(bucket, key)) for key in keys]
    else:
        folder = Path(source)
        if not folder.is_dir():
            raise RegistryError(f"reference folder {folder} does not exist")
        files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        named = [(str(path), path.read_bytes) for path in files]
    if not named:
        raise RegistryError(f"no reference images ({', '.join(sorted(IMAGE_SUFFIXES))}) found in {source}")
    images = []
    for name, read in named:
        try:
            images.append(decode_image(read()))
        except ImageDecodeError as error:
            raise RegistryError(f"reference image {name}: {error}") from error
    return images


def calibrate_threshold(
    detector: InCTRLv2,
    references: torch.Tensor,
    class_name: str,
    normals: torch.Tensor | None = None,
    target_fpr: float = DEFAULT_TARGET_FPR,
    defects: torch.Tensor | None = None,
    threshold: float | None = None,
) -> tuple[float, ThresholdCalibration]:
    """The image threshold for `target_fpr` and the pixel calibration, from normal images only (a normal
    set when given, else leave-one-out over K >= 2 references; model/calibration.py). Defect images only
    measure the recall the threshold implies. A given `threshold` replaces the image threshold; the pixel
    calibration is still made when the images allow it (K >= 2 or a normal set)."""
    has_normals = normals is not None and len(normals) > 0
    if threshold is not None and not has_normals and len(references) < 2:
        return threshold, ThresholdCalibration(method="given")
    try:
        _, found = calibrate(detector, references, class_name, normals, defects, target_fpr)
    except CalibrationError as error:
        raise RegistryError(f"{error}; give --threshold") from error
    chosen = found.threshold if threshold is None else threshold
    defect_scores = found.defect_scores
    calibration = ThresholdCalibration(
        method="given" if threshold is not None else found.method,
        normal_scores=found.normal_scores,
        target_fpr=found.target_fpr,
        pixel_threshold=found.pixel_threshold,
        map_range=found.map_range,
        normal_map_maxima=found.normal_map_maxima,
        defect_scores=defect_scores,
        recall=sum(s >= chosen for s in defect_scores) / len(defect_scores) if defect_scores else None,
    )
    return chosen, calibration


class DomainRegistry:
    """Registered domains under one s3:// prefix."""

    def __init__(self, store: ObjectStore, prefix: str) -> None:
        self._store = store
        self.bucket, self._prefix = split_s3_prefix(prefix)
        self.uri = f"s3://{self.bucket}/{self._prefix}"

    def _key(self, domain: str, *parts: str) -> str:
        return f"{self._prefix}{domain}/" + "/".join(parts)

    def register(
        self,
        name: str,
        class_name: str,
        images: Sequence[np.ndarray | torch.Tensor],
        detector: InCTRLv2,
        threshold: float | None = None,
        calibration_images: Sequence[np.ndarray | torch.Tensor] | None = None,
        source: str = "<memory>",
    ) -> DomainRecord:
        """Build the bank from K >= 1 normal images, store version N+1 and point current.json at it."""
        check_domain_name(name)
        if not class_name.strip():
            raise RegistryError(f"domain {name!r}: class name is empty")
        if not images:
            raise RegistryError(f"domain {name!r}: no reference images")
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise RegistryError(f"domain {name!r}: threshold {threshold} is outside [0, 1]")
        size = detector.backbone.image_size
        references = stack_for_backbone(images, size, "reference images")
        bank = detector.build_prompt_bank(references, class_name)
        if threshold is None:
            normals = stack_for_backbone(calibration_images, size, "calibration images") if calibration_images else None
            threshold, calibration = calibrate_threshold(detector, references, class_name, normals)
        else:
            calibration = ThresholdCalibration(method="given")
        self._store.ensure_bucket(self.bucket)
        version = max(self.versions(name), default=0) + 1
        now = datetime.now(timezone.utc)
        record = DomainRecord(
            name=name, version=version, class_name=class_name, shots=bank.shots, threshold=threshold,
            calibration=calibration, backbone_id=bank.backbone_id, created=now, source=source,
        )  # fmt: skip
        self._store.put_bytes(self.bucket, self._key(name, f"v{version}", "bank.safetensors"), bank.to_bytes())
        self._store.put_json(self.bucket, self._key(name, f"v{version}", "domain.json"), record)
        self._store.put_json(self.bucket, self._key(name, "current.json"), DomainPointer(version=version, updated=now))
        logger.info(
            "domain registered",
            extra={"domain": name, "version": version, "shots": bank.shots, "threshold": threshold, "method": calibration.method},
        )
        return record

    def versions(self, name: str) -> list[int]:
        """Stored versions of a domain, ascending."""
        base = self._key(name)
        matches = (_VERSION_DIR.match(key[len(base) :]) for key in self._keys(base))
        return sorted({int(match.group(1)) for match in matches if match})

    def current_version(self, name: str) -> int:
        """The version current.json points at; UnknownDomainError when there is none."""
        check_domain_name(name)
        document = self._get_json(name, self._key(name, "current.json"))
        return DomainPointer.model_validate(document).version

    def show(self, name: str, version: int | None = None) -> DomainRecord:
        """The record of a version (default: the current one)."""
        version = version or self.current_version(name)
        return DomainRecord.model_validate(self._get_json(name, self._key(name, f"v{version}", "domain.json")))

    def load(self, name: str, version: int | None = None) -> RegisteredDomain:
        """Record and bank of a version (default: the current one)."""
        record = self.show(name, version)
        key = self._key(name, f"v{record.version}", "bank.safetensors")
        bank = PromptBank.from_bytes(self._get_bytes(name, key), source=f"s3://{self.bucket}/{key}")
        return RegisteredDomain(record=record, bank=bank)

    def list(self) -> list[DomainRecord]:
        """Current records of every registered domain, by name."""
        pointers = [key for key in self._keys(self._prefix) if key.endswith("/current.json")]
        names = sorted(key[len(self._prefix) :].split("/", 1)[0] for key in pointers)
        return [self.show(name) for name in names]

    def delete(self, name: str) -> int:
        """Remove every version of a domain (pointer first, so readers stop at once); returns objects removed."""
        self.current_version(name)
        keys = self._keys(self._key(name))
        pointer = self._key(name, "current.json")
        ordered = [pointer] + [key for key in keys if key != pointer]
        for key in ordered:
            self._store.delete(self.bucket, key)
        logger.info("domain deleted", extra={"domain": name, "objects": len(ordered)})
        return len(ordered)

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

    def _get_json(self, name: str, key: str) -> object:
        return json.loads(self._get_bytes(name, key))
