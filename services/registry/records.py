"""What the registry stores per domain (domain.json, current.json) and the errors it raises."""
from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from model import PromptBank
from model.calibration import DEFAULT_TARGET_FPR
from services.serving.deployment_config import DOMAIN_NAME_PATTERN


class RegistryError(ValueError):
    """A registry request that cannot be served; the message names the domain and what is wrong."""


class UnknownDomainError(RegistryError, LookupError):
    """The domain has no registered version."""


class ConcurrentUpdateError(RegistryError):
    """Another writer changed the domain between this request's read and its conditional write; nothing changed."""


class CorruptDomainError(RegistryError):
    """A stored version's objects do not match the digests its pointer and record carry, or do not parse."""


class ThresholdCalibration(BaseModel):
    """How a domain's thresholds were obtained (model/calibration.py): the image threshold for a target
    false-positive rate, the pixel threshold and the map's display range. Every field added after the first
    records has a default, so older domain.json files still load (their pixel fields are None)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Literal["given", "leave-one-out", "normal-set"]
    quantile: float | None = Field(None, description="Records before target-FPR calibration: the normal-score quantile.")
    margin: float | None = Field(None, description="Records before target-FPR calibration: added to that quantile.")
    normal_scores: list[float] = Field(default_factory=list, description="The normal scores it was set from.")
    view_scores: int = Field(
        0, ge=0, description="How many of normal_scores (the last ones) are the references' nuisance views' (model/nuisance.py)."
    )
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
    """domain.json of one version. Fields added after the first records have defaults, so those still load."""

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
    actor: str = Field("unknown", description="Who made this version ('unknown' on records from before actors).")
    note: str | None = Field(None, description="Why, in the actor's words (e.g. the frame a reviewer marked normal).")
    parent_version: int | None = Field(
        None, ge=1, description="The version whose references this one extends (add_references); None for a registration."
    )
    references: list[str] = Field(
        default_factory=list, description="Reference image files under v{N}/references/, in bank order; empty before they were kept."
    )
    calibration_images: list[str] = Field(
        default_factory=list, description="The normal set under v{N}/calibration/ the threshold was calibrated on."
    )
    target_fpr: float = Field(
        DEFAULT_TARGET_FPR, gt=0.0, lt=0.5, description="False-positive rate the image threshold is calibrated for; kept by add_references."
    )
    defect_images: list[str] = Field(
        default_factory=list, description="Defect images under v{N}/defects/ the recall was measured on; they never move the threshold."
    )
    bank_sha256: str | None = Field(None, description="sha256 of bank.safetensors; None on records from before digests.")

    @property
    def reference_version(self) -> str:
        """The version tag results carry."""
        return f"{self.name}/v{self.version}"


class DomainPointer(BaseModel):
    """current.json: the serving version, the domain's version counter and, after a delete, its tombstone.

    Only ever replaced by compare-and-swap (see the module docstring). Pointers written before the counter
    existed hold only version and updated, and still load.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int | None = Field(
        ge=1, description="The version replicas serve; None after a delete, or before the first registration lands."
    )
    updated: AwareDatetime
    last_version: int = Field(0, ge=0, description="Highest version number ever allocated; the next is one more.")
    deleted_through: int = Field(0, ge=0, description="Versions up to this one were deleted and never come back.")
    digest: str | None = Field(None, description="sha256 of the serving version's domain.json: what the bank cache keys on.")
    actor: str | None = Field(None, description="Who made the last change.")
    revision: str = Field(
        default_factory=lambda: uuid.uuid4().hex, description="Unique per write, so a writer can recognise its own write."
    )

    def next_version(self) -> int:
        """The number a new version gets: above every one allocated, served or deleted."""
        return max(self.last_version, self.version or 0, self.deleted_through) + 1


@dataclass(frozen=True)
class RegisteredDomain:
    """A domain's record and its bank, as replicas load it; digest is the sha256 of its domain.json."""

    record: DomainRecord
    bank: PromptBank
    digest: str


def check_domain_name(name: str) -> str:
    """Domain names become S3 keys and Serve deployment names: keep them to one safe alphabet."""
    if not re.match(DOMAIN_NAME_PATTERN, name):
        raise RegistryError(
            f"domain name {name!r} must be 1-40 lowercase letters, digits or '-', starting and ending with a letter or digit"
        )
    return name
