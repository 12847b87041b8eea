"""Ray Serve application: an HTTP/handle ingress routing frames by domain to detector deployments.

    serve run services.serving.app:build_app   (args: the DeploymentConfig dict, as serveConfigV2 renders it)

Deployments: "pool" serves every domain without its own deployment; each hot domain in the config gets
"domain-<name>" with its own replicas and batch settings. Every detector replica loads the checkpoint
once and batches requests with serve.batch; a batch may mix domains and goes through the backbone in ONE
call, then each domain's group is scored against its bank (services.serving.engine). Multiplexing by
domain around the backbone call would split batches per domain, so it is not used.

S3 settings come from INCTRL_* environment variables (ServiceSettings); bank cache size, re-check
interval and ingress limits from ServingSettings; API tokens from INCTRL_API_TOKENS (services/auth.py):
the ingress refuses to start without them unless INCTRL_AUTH_DISABLED=true.

Failure classes at the ingress: whatever a frame or its domain brings is a Rejected outcome from the
engine; a detector call that fails (the replica died, Serve back-pressure, no answer within
detector_timeout_s) is Retryable for that frame alone. Over HTTP a single inspection answers 503 with
Retry-After for a retryable frame, and the batch route reports it per frame as code "retryable".
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np
from ray import serve
from ray.serve.handle import DeploymentHandle

from services.auth import AuthSettings, TokenAuthority
from services.protocol.batch import BatchFrame, BatchInspectionResponse, FrameOutcome
from services.serving.deployment_config import POOL_DEPLOYMENT_NAME, DeploymentConfig, deployment_config_from_args
from services.serving.http_api import DomainRegistration, InspectionRejected, InspectionRetryLater, create_http_app
from services.protocol.outcomes import DecodedFrame, InspectionOutcome, InspectionUnavailable, Rejected, Retryable, Scored
from services.protocol.messages import DeadLetterReason, InspectionRequest, InspectionResult, verdict_for
from services.metrics import DomainLabels, InspectionMetrics
from services.storage.object_store import ObjectStore
from services.registry.domain_registry import DomainRecord, DomainRegistry, UnknownDomainError, load_reference_images
from services.imaging.decoding import ImageDecodeError, decode_image
from services.serving.bank_cache import BankCache
from services.serving.checkpoint_source import load_detector
from services.serving.engine import FrameInput, InspectionEngine
from services.results.writer import write_result
from services.serving.settings import ServingSettings
from services.settings import ServiceSettings

logger = logging.getLogger(__name__)

_HEALTH_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class ScoredFrame:
    """A detector replica's answer for one frame, with the size of the backbone batch it rode in."""

    outcome: InspectionOutcome
    batch_size: int


def configured_threshold(config: DeploymentConfig, domain: str) -> float | None:
    """A threshold the deployment config sets explicitly for a domain (it overrides the registry's)."""
    if domain in config.domains:
        return config.domains[domain].threshold
    return config.pool.thresholds.get(domain)


@serve.deployment
class DetectorDeployment:
    """Loads the checkpoint once and scores batches of frames of any domains."""

    def __init__(self, args: dict[str, Any], domain: str | None) -> None:
        config = deployment_config_from_args(args)
        settings, serving = ServiceSettings(), ServingSettings()
        store = ObjectStore.from_settings(settings)
        detector, model_version = load_detector(config.checkpoint_uri, store, config.nn_backend, config.backbone)
        self._registry = DomainRegistry(store, config.registry_prefix, max_references=serving.max_references)
        self._store = store
        banks = BankCache(self._registry, detector.device, serving.bank_cache_size, serving.bank_recheck_s)

        def threshold_for(record: DomainRecord) -> float:
            explicit = configured_threshold(config, record.name)
            return record.threshold if explicit is None else explicit

        self._engine = InspectionEngine(detector, banks, threshold_for, model_version, serving.max_aspect_ratio)
        batch = config.batch_for(domain)
        self.score.set_max_batch_size(batch.max_batch_size)
        self.score.set_batch_wait_timeout_s(batch.batch_wait_timeout_s)
        logger.info("detector replica ready", extra={"serves": domain or POOL_DEPLOYMENT_NAME, "model_version": model_version})

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01)
    async def score(self, frames: list[FrameInput]) -> list[ScoredFrame]:
        """Batched by Serve; the model runs in a worker thread so new requests keep queueing meanwhile."""
        outcomes = await asyncio.to_thread(self._engine.inspect, frames)
        return [ScoredFrame(outcome, len(frames)) for outcome in outcomes]

    async def register_domain(self, registration: DomainRegistration, actor: str) -> DomainRecord:
        """Build and store a new version of a domain from an s3:// prefix of normal images."""

        def register() -> DomainRecord:
            images = load_reference_images(registration.images_uri, self._store)
            record = self._registry.register(
                registration.name, registration.class_name, images, self._engine.detector,
                threshold=registration.threshold, source=registration.images_uri, actor=actor,
            )  # fmt: skip
            self._engine.banks.invalidate(registration.name)
            return record

        return await asyncio.to_thread(register)

    def model_version(self) -> str:
        return self._engine.model_version


@serve.deployment(ray_actor_options={"num_cpus": 0.1})
@serve.ingress()
class InspectionIngress:
    """Routes frames by domain (HTTP and handle calls) and keeps the service's Prometheus metrics."""

    def __init__(self, detectors: dict[str, DeploymentHandle], args: dict[str, Any]) -> None:
        self._config = deployment_config_from_args(args)
        self._settings = ServiceSettings()
        self._serving = ServingSettings()
        # Before anything else: without tokens (and without the explicit dev switch) the ingress must not start.
        self._authority = TokenAuthority.from_settings(AuthSettings())
        self._store = ObjectStore.from_settings(self._settings)
        self._store.ensure_bucket(self._settings.results_bucket)
        self._registry = DomainRegistry(self._store, self._config.registry_prefix, max_references=self._serving.max_references)
        self._detectors = detectors
        self.metrics = InspectionMetrics(DomainLabels([*self._config.domains, *self._config.pool.thresholds]))

    def __serve_build_asgi_app__(self):  # noqa: ANN204 - Serve calls this to get the ASGI app
        return create_http_app(self, self._authority, self._serving)

    async def _route(self, frame: FrameInput) -> InspectionOutcome:
        started = time.monotonic()
        deployment = self._config.deployment_name(frame.domain)
        response = self._detectors[deployment].score.remote(frame)
        timeout_s = self._config.detector_timeout_s
        try:
            scored: ScoredFrame = await asyncio.wait_for(_resolved(response), timeout_s)
        except TimeoutError:
            response.cancel()
            logger.warning("detector call timed out", extra={"domain": frame.domain, "deployment": deployment})
            outcome: InspectionOutcome = Retryable(f"deployment {deployment!r} gave no answer within {timeout_s}s")
        except Exception as error:  # noqa: BLE001 - replica died, back-pressure, deployment unavailable: retry the frame
            # The engine turns everything a frame or its domain brings into an outcome, so what reaches
            # here is the call failing: nobody's input fault.
            logger.warning("detector call failed", extra={"domain": frame.domain, "deployment": deployment, "error": repr(error)})
            outcome = Retryable(f"detector call to {deployment!r} failed: {type(error).__name__}: {str(error)[:500]}")
        else:
            outcome = scored.outcome
            self.metrics.batch_size.observe(scored.batch_size)
        verdict = verdict_for(outcome.score, outcome.threshold).value if isinstance(outcome, Scored) else None
        error = outcome.reason.value if isinstance(outcome, Rejected) else "retryable" if isinstance(outcome, Retryable) else None
        self.metrics.observe_outcome(frame.domain, verdict, error, time.monotonic() - started)
        return outcome

    async def inspect_frames(self, frames: Sequence[FrameInput]) -> list[InspectionOutcome]:
        """One outcome per frame, in order; the frames fan out to their deployments and batch there."""
        return list(await asyncio.gather(*(self._route(frame) for frame in frames)))

    def _decode(self, image: bytes) -> np.ndarray:
        """The consumer's decode, with the consumer's limits (pixels, side, decoded bytes)."""
        settings = self._settings
        return decode_image(image, settings.max_image_pixels, settings.max_image_side, settings.max_decoded_image_bytes)

    async def inspect_upload(self, domain: str, line: str, frame_id: str, image: bytes, store: bool) -> InspectionResult:
        started = time.monotonic()
        pixels = await asyncio.to_thread(self._decode, image)
        request = InspectionRequest(
            frame_id=frame_id, domain=domain, line=line, timestamp=datetime.now(timezone.utc), image=image
        )
        outcome = await self._route(FrameInput(domain, pixels))
        if isinstance(outcome, Rejected) and outcome.reason is DeadLetterReason.UNKNOWN_DOMAIN:
            raise UnknownDomainError(outcome.detail)
        if isinstance(outcome, Rejected):
            raise InspectionRejected(f"frame {frame_id} rejected: {outcome.detail}")
        if isinstance(outcome, Retryable):
            raise InspectionRetryLater(f"frame {frame_id} could not be inspected now: {outcome.detail}")
        return await asyncio.to_thread(
            write_result, request, pixels, outcome, started, self._settings.results_bucket,
            self._store if store else None, self._settings.overlay_jpeg_quality,
            original=image if self._settings.store_inputs else None,
        )  # fmt: skip

    async def inspect_batch(self, frames: list[BatchFrame], images: list[bytes]) -> BatchInspectionResponse:
        """Score encoded images of any domains; a bad image fails alone. Nothing is written to S3."""

        def decode(image: bytes) -> np.ndarray | Rejected:
            try:
                return self._decode(image)
            except ImageDecodeError as error:
                return Rejected(DeadLetterReason.INFERENCE_ERROR, f"image rejected: {error}")

        async def inspect(frame: BatchFrame, pixels: np.ndarray | Rejected) -> InspectionOutcome:
            if isinstance(pixels, Rejected):
                self.metrics.observe_outcome(frame.domain, None, DeadLetterReason.INFERENCE_ERROR.value, 0.0)
                return pixels
            return await self._route(FrameInput(frame.domain, pixels))

        decoded = await asyncio.to_thread(lambda: [decode(image) for image in images])
        outcomes = await asyncio.gather(*(inspect(frame, pixels) for frame, pixels in zip(frames, decoded)))
        encoded = await asyncio.to_thread(
            lambda: [FrameOutcome.from_outcome(frame.frame_id, outcome) for frame, outcome in zip(frames, outcomes)]
        )
        return BatchInspectionResponse(outcomes=encoded)

    async def list_domains(self) -> list[DomainRecord]:
        return await asyncio.to_thread(self._registry.list)

    async def show_domain(self, name: str) -> DomainRecord:
        return await asyncio.to_thread(self._registry.show, name)

    async def register_domain(self, registration: DomainRegistration, actor: str) -> DomainRecord:
        return await self._detectors[POOL_DEPLOYMENT_NAME].register_domain.remote(registration, actor)

    async def health(self) -> dict[str, object]:
        return {"status": "ok", "deployments": sorted(self._detectors)}


async def _resolved(response: Any) -> Any:  # noqa: ANN401 - a DeploymentResponse resolves to the method's result
    """A DeploymentResponse as a coroutine, so asyncio.wait_for can time it out."""
    return await response


def build_app(args: dict[str, Any]) -> serve.Application:
    """The application for `serve run` / serveConfigV2 (import path services.serving.app:build_app)."""
    config = deployment_config_from_args(args)
    options = config.serve_options()
    detectors = {POOL_DEPLOYMENT_NAME: DetectorDeployment.options(**options[POOL_DEPLOYMENT_NAME]).bind(dict(args), None)}
    for domain in config.domains:
        name = config.deployment_name(domain)
        detectors[name] = DetectorDeployment.options(**options[name]).bind(dict(args), domain)
    return InspectionIngress.bind(detectors, dict(args))


class InspectionClient:
    """The FrameConsumer's `inspect` callable: sends a micro-batch to the running Serve app's ingress."""

    def __init__(self, app_name: str | None = None, timeout_s: float | None = None) -> None:
        serving = ServingSettings()
        self._handle = serve.get_app_handle(app_name or serving.serve_app_name)
        self._timeout_s = timeout_s or serving.inspect_timeout_s

    def __call__(self, frames: Sequence[DecodedFrame]) -> list[InspectionOutcome]:
        """One outcome per frame; InspectionUnavailable when the ingress itself cannot be reached in time."""
        inputs = [FrameInput(frame.request.domain, frame.image) for frame in frames]
        try:
            return self._handle.inspect_frames.remote(inputs).result(timeout_s=self._timeout_s)
        except Exception as error:  # noqa: BLE001 - the ingress answers per frame; a failed call is the service's
            raise InspectionUnavailable(
                f"Serve app ingress did not answer for {len(frames)} frames: {type(error).__name__}: {str(error)[:500]}"
            ) from error

    def reachable(self) -> bool:
        """Whether the ingress answers its health call now (for the consumer's readiness)."""
        try:
            self._handle.health.remote().result(timeout_s=_HEALTH_TIMEOUT_S)
        except Exception:  # any failure to answer means not reachable; the reason is in the Serve logs
            return False
        return True
