"""The Ray Serve application config: the `args` of the inctrl application in serveConfigV2.

The Helm chart renders these args into the RayService's serveConfigV2; the Serve app
(`services.serving.app:build_app`) turns them into a `DeploymentConfig` with
`deployment_config_from_args` and builds one shared pool deployment for the long tail of
domains plus one dedicated deployment per hot domain.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

logger = logging.getLogger(__name__)

DOMAIN_NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$"
POOL_DEPLOYMENT_NAME = "pool"
DOMAIN_DEPLOYMENT_PREFIX = "domain-"
_S3_URI = re.compile(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$")


class DeploymentConfigError(ValueError):
    """Raised when Serve application args do not describe a valid deployment."""


class _Strict(BaseModel):
    # Unknown keys are typos in Helm values or serve configs: reject them instead of ignoring.
    model_config = ConfigDict(extra="forbid", frozen=True)


class BatchSettings(_Strict):
    """Dynamic batching of one deployment (`serve.batch`)."""

    max_batch_size: int = Field(16, ge=1, le=1024, description="Largest batch sent to the backbone.")
    batch_wait_timeout_s: float = Field(
        0.01, ge=0.0, le=10.0, description="Longest wait for a batch to fill, in seconds."
    )


class Autoscaling(_Strict):
    """Ray Serve autoscaling bounds for one deployment."""

    min_replicas: int = Field(1, ge=0, description="Replicas kept when idle (0 scales to zero).")
    max_replicas: int = Field(ge=1, description="Upper bound on replicas.")
    target_ongoing_requests: float = Field(
        32.0, gt=0, description="Ongoing requests per replica the autoscaler aims for."
    )
    upscale_delay_s: float = Field(30.0, ge=0, description="Sustained load before adding replicas.")
    downscale_delay_s: float = Field(600.0, ge=0, description="Sustained idleness before removing replicas.")

    @model_validator(mode="after")
    def _bounds_ordered(self) -> Autoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"min_replicas ({self.min_replicas}) must not exceed max_replicas ({self.max_replicas})"
            )
        return self


class ActorOptions(_Strict):
    """Resources one replica reserves (`ray_actor_options`)."""

    num_cpus: float = Field(1.0, ge=0, description="CPUs per replica.")
    num_gpus: float = Field(0.0, ge=0, description="GPUs per replica; fractions share a device.")


class ServeDeployment(_Strict):
    """A Serve deployment: fixed replicas or autoscaling, resources, optional batch override."""

    num_replicas: int | None = Field(None, ge=1, description="Fixed replica count.")
    autoscaling: Autoscaling | None = Field(None, description="Autoscaling instead of a fixed count.")
    max_ongoing_requests: int = Field(64, ge=1, description="Requests a replica accepts concurrently.")
    max_queued_requests: int = Field(
        1024,
        ge=-1,
        description="Requests waiting for a replica, per caller; beyond it a call fails at once with Serve's "
        "back-pressure error (a retryable frame) instead of queueing without bound; -1 for no limit.",
    )
    ray_actor_options: ActorOptions = Field(default_factory=ActorOptions)
    batch: BatchSettings | None = Field(None, description="Overrides the application's default batch.")

    @model_validator(mode="after")
    def _one_scaling_mode(self) -> ServeDeployment:
        if self.num_replicas is not None and self.autoscaling is not None:
            raise ValueError("set either num_replicas or autoscaling, not both")
        return self

    def serve_options(self, name: str, batch: BatchSettings) -> dict[str, Any]:
        """Keyword arguments for `Deployment.options(...)` in Ray Serve 2.60."""
        if self.max_ongoing_requests < batch.max_batch_size:
            # A replica never holds more than max_ongoing_requests, so larger batches never form.
            raise DeploymentConfigError(
                f"deployment {name!r}: max_ongoing_requests ({self.max_ongoing_requests}) is below "
                f"max_batch_size ({batch.max_batch_size}); batches could never fill"
            )
        options: dict[str, Any] = {
            "name": name,
            "max_ongoing_requests": self.max_ongoing_requests,
            "max_queued_requests": self.max_queued_requests,
            "ray_actor_options": self.ray_actor_options.model_dump(),
        }
        if self.autoscaling is not None:
            options["autoscaling_config"] = self.autoscaling.model_dump()
        else:
            options["num_replicas"] = self.num_replicas if self.num_replicas is not None else 1
        return options


class PoolDeployment(ServeDeployment):
    """The shared deployment serving the long tail of domains."""

    thresholds: dict[str, float] = Field(
        default_factory=dict,
        description="Verdict thresholds of the long-tail domains this pool serves, by domain.",
    )

    @model_validator(mode="after")
    def _valid_thresholds(self) -> PoolDeployment:
        for domain, threshold in self.thresholds.items():
            _check_domain_name(domain)
            _check_threshold(domain, threshold)
        return self


class DomainDeployment(ServeDeployment):
    """A hot domain's own deployment, with its own scaling, batch settings and threshold."""

    threshold: float | None = Field(
        None, description="Score above which a frame is anomalous; the app default when unset."
    )

    @model_validator(mode="after")
    def _valid_threshold(self) -> DomainDeployment:
        if self.threshold is not None:
            _check_threshold("this domain", self.threshold)
        return self


class DeploymentConfig(_Strict):
    """Everything the Serve app needs to build its deployments."""

    checkpoint_uri: str = Field(min_length=1, description="Detector checkpoint: local path or s3:// URI.")
    backbone: str = Field("ViT-B-16-plus-240", min_length=1, description="OpenCLIP model name.")
    nn_backend: Literal["torch", "faiss"] = Field(
        "faiss", description="Patch nearest-neighbour search implementation."
    )
    registry_prefix: str = Field(description="s3:// prefix of the domain registry (reference features).")
    references_revision: str = Field(
        "", description="Opaque marker of the reference set; a change makes Serve roll the replicas."
    )
    batch: BatchSettings = Field(default_factory=BatchSettings, description="Default batch settings.")
    detector_timeout_s: float = Field(
        60.0,
        gt=0,
        description="Longest wait of the ingress for one frame's detector answer, queueing and batching "
        "included; then that frame is retryable. Keep it below the consumer's INCTRL_INSPECT_TIMEOUT_S so a "
        "slow frame comes back retryable instead of failing its whole call.",
    )
    pool: PoolDeployment = Field(
        default_factory=lambda: PoolDeployment(num_replicas=1),
        description="Shared deployment serving every domain without its own.",
    )
    domains: dict[str, DomainDeployment] = Field(
        default_factory=dict, description="Hot domains with a dedicated deployment, by domain name."
    )

    @model_validator(mode="after")
    def _consistent(self) -> DeploymentConfig:
        if "://" in self.checkpoint_uri and not _S3_URI.match(self.checkpoint_uri):
            raise ValueError(
                f"checkpoint_uri {self.checkpoint_uri!r} must be a local path or s3://bucket/key"
            )
        if not _S3_URI.match(self.registry_prefix):
            raise ValueError(f"registry_prefix {self.registry_prefix!r} must be an s3://bucket/prefix URI")
        for domain in self.domains:
            _check_domain_name(domain)
        both = sorted(set(self.domains) & set(self.pool.thresholds))
        if both:
            raise ValueError(
                f"domains {both} have a dedicated deployment and a pool threshold; keep one"
            )
        return self

    def batch_for(self, domain: str | None) -> BatchSettings:
        """Batch settings of the deployment serving `domain` (None: the pool)."""
        own = self.domains[domain].batch if domain in self.domains else self.pool.batch
        return own or self.batch

    def threshold_for(self, domain: str) -> float | None:
        """A verdict threshold this config sets for `domain` (it overrides the registry's); None: the registry's."""
        if domain in self.domains:
            return self.domains[domain].threshold
        return self.pool.thresholds.get(domain)

    def deployment_name(self, domain: str | None) -> str:
        """Serve deployment name serving `domain`: its own, else the pool."""
        return DOMAIN_DEPLOYMENT_PREFIX + domain if domain in self.domains else POOL_DEPLOYMENT_NAME

    def serve_options(self) -> dict[str, dict[str, Any]]:
        """`Deployment.options(...)` kwargs for the pool and each dedicated domain, by deployment name."""
        options = {POOL_DEPLOYMENT_NAME: self.pool.serve_options(POOL_DEPLOYMENT_NAME, self.batch_for(None))}
        for domain, deployment in self.domains.items():
            name = self.deployment_name(domain)
            options[name] = deployment.serve_options(name, self.batch_for(domain))
        return options


def _check_domain_name(domain: str) -> None:
    if not re.match(DOMAIN_NAME_PATTERN, domain):
        raise ValueError(
            f"domain name {domain!r} must be 1-40 lowercase letters, digits or '-', "
            "starting and ending with a letter or digit (it names a Serve deployment)"
        )


def _check_threshold(what: str, threshold: float) -> None:
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold of {what} is {threshold}; scores lie in [0, 1]")


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "<root>"
        lines.append(f"  {where}: {item['msg']}")
    return "\n".join(lines)


def deployment_config_from_args(args: Mapping[str, Any]) -> DeploymentConfig:
    """Validate the `args` dict of the Serve application (serveConfigV2 applications[].args)."""
    if not isinstance(args, Mapping):
        raise DeploymentConfigError(f"Serve application args must be a mapping, got {type(args).__name__}")
    try:
        config = DeploymentConfig.model_validate(dict(args))
        config.serve_options()
    except ValidationError as error:
        raise DeploymentConfigError(f"invalid Serve application args:\n{_describe(error)}") from error
    logger.info(
        "deployment config loaded",
        extra={"domains": sorted(config.domains), "nn_backend": config.nn_backend},
    )
    return config


def deployment_config_from_serve_config(serve_config: str | Mapping[str, Any], application: str) -> DeploymentConfig:
    """Find `application` in a serveConfigV2 document (YAML text or dict) and validate its args."""
    document = yaml.safe_load(serve_config) if isinstance(serve_config, str) else serve_config
    if not isinstance(document, Mapping) or not isinstance(document.get("applications"), list):
        raise DeploymentConfigError("serve config has no 'applications' list")
    names = [app.get("name") for app in document["applications"] if isinstance(app, Mapping)]
    for app in document["applications"]:
        if isinstance(app, Mapping) and app.get("name") == application:
            return deployment_config_from_args(app.get("args") or {})
    raise DeploymentConfigError(f"serve config has no application {application!r}; it has {names}")
