"""The Serve ingress: routes frames by domain (HTTP and handle calls) and keeps the service's metrics.

Frames from the Kafka consumer arrive prepared (pixels at the backbone's geometry); encoded images from
other HTTP clients are decoded and prepared here, once. Detector replicas then do device work only.

Failure classes: whatever a frame or its domain brings is a Rejected outcome from the engine; a detector
call that fails (the replica died, Serve back-pressure, no answer within detector_timeout_s) is Retryable
for that frame alone. Over HTTP a single inspection answers 503 with Retry-After for a retryable frame, and
the batch route reports it per frame as code "retryable".
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

import numpy as np
from ray import serve
from ray.serve.handle import DeploymentHandle

from model import InvalidImageError
from model.backbones import input_size as backbone_input_size
from services.auth import AuthSettings, TokenAuthority
from services.imaging.decoding import ImageDecodeError, decode_image
from services.imaging.geometry import prepare_frame
from services.metrics import DomainLabels, InspectionMetrics
from services.protocol.batch import BatchFrame, BatchInspectionResponse, FrameOutcome, ModelInfo, pixels_from_part
from services.protocol.messages import DeadLetterReason, InspectionRequest, InspectionResult, verdict_for
from services.protocol.outcomes import FrameInput, InspectionOutcome, Rejected, Retryable, Scored
from services.registry.domain_registry import DomainRegistry
from services.registry.records import DomainRecord, UnknownDomainError
from services.results.writer import write_result
from services.serving.deployment_config import POOL_DEPLOYMENT_NAME, DeploymentConfig
from services.serving.detector_deployment import ScoredFrame
from services.serving.http_api import DomainRegistration, InspectionRejected, InspectionRetryLater, create_http_app
from services.serving.settings import ServingSettings
from services.settings import ServiceSettings
from services.storage.object_store import ObjectStore

logger = logging.getLogger(__name__)


@serve.deployment(ray_actor_options={"num_cpus": 0.1})
@serve.ingress()
class InspectionIngress:
    """Routes frames by domain to the detector deployments; decodes only what arrives encoded."""

    def __init__(self, detectors: dict[str, DeploymentHandle], config: DeploymentConfig) -> None:
        self._config = config
        self._settings = ServiceSettings()
        self._serving = ServingSettings()
        # Before anything else: without tokens (and without the explicit dev switch) the ingress must not start.
        self._authority = TokenAuthority.from_settings(AuthSettings())
        self._store = ObjectStore.from_settings(self._settings)
        self._store.ensure_bucket(self._settings.results_bucket)
        self._registry = DomainRegistry(self._store, config.registry_prefix, max_references=self._serving.max_references)
        self._detectors = detectors
        # From the config's backbone name (it must name the checkpoint's: replicas refuse another), so that
        # answering it never queues behind frames at a replica.
        self._model = ModelInfo(input_size=backbone_input_size(config.backbone), backbone=config.backbone)
        self._replica_cpu_s = 0.0
        self.metrics = InspectionMetrics(DomainLabels([*config.domains, *config.pool.thresholds]))

    def __serve_build_asgi_app__(self):  # noqa: ANN204 - Serve calls this to get the ASGI app
        return create_http_app(self, self._authority, self._serving)

    async def model_info(self) -> ModelInfo:
        """The input size prepared frames must have, and the backbone (every deployment loads the same checkpoint)."""
        return self._model

    async def input_size(self) -> int:
        return self._model.input_size

    async def cpu_seconds(self) -> dict[str, float]:
        """CPU time so far of this ingress's process and of the replicas' batches it routed frames to (the
        stream bench's transfer and replica stages)."""
        return {"ingress": time.process_time(), "replica": self._replica_cpu_s}

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
            self._replica_cpu_s += scored.cpu_s
        self._observe(frame.domain, outcome, time.monotonic() - started)
        return outcome

    def _observe(self, domain: str, outcome: InspectionOutcome, seconds: float) -> None:
        verdict = verdict_for(outcome.score, outcome.threshold).value if isinstance(outcome, Scored) else None
        error = outcome.reason.value if isinstance(outcome, Rejected) else "retryable" if isinstance(outcome, Retryable) else None
        self.metrics.observe_outcome(domain, verdict, error, seconds)

    async def inspect_frames(self, frames: Sequence[FrameInput]) -> list[InspectionOutcome]:
        """One outcome per prepared frame, in order; the frames fan out to their deployments and batch there."""
        return list(await asyncio.gather(*(self._route(frame) for frame in frames)))

    def _decode(self, image: bytes, size: int, what: str) -> tuple[np.ndarray, np.ndarray]:
        """The consumer's decode and preparation, with the consumer's limits: (image, prepared pixels)."""
        settings = self._settings
        pixels = decode_image(image, settings.max_image_pixels, settings.max_image_side, settings.max_decoded_image_bytes)
        return pixels, prepare_frame(pixels, size, what, self._serving.max_aspect_ratio)

    async def inspect_upload(self, domain: str, line: str, frame_id: str, image: bytes, store: bool) -> InspectionResult:
        started = time.monotonic()
        size = await self.input_size()
        try:
            pixels, prepared = await asyncio.to_thread(self._decode, image, size, f"frame {frame_id}")
        except InvalidImageError as error:
            raise InspectionRejected(f"frame {frame_id} rejected: {error}") from error
        request = InspectionRequest(
            frame_id=frame_id, domain=domain, line=line, timestamp=datetime.now(timezone.utc), image=image
        )
        outcome = await self._route(FrameInput(domain, prepared))
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

    async def inspect_batch(self, frames: list[BatchFrame], parts: list[bytes]) -> BatchInspectionResponse:
        """Score prepared frames or encoded images of any domains; a bad one fails alone. Nothing is written."""
        size = await self.input_size()

        def prepare(frame: BatchFrame, part: bytes) -> tuple[FrameInput, tuple[int, int]] | Rejected:
            what = f"frame {frame.frame_id}"
            try:
                if frame.original_size is not None:
                    return FrameInput(frame.domain, pixels_from_part(part, size, what)), frame.original_size
                image, prepared = self._decode(part, size, what)
                return FrameInput(frame.domain, prepared), (int(image.shape[-2]), int(image.shape[-1]))
            except (ImageDecodeError, InvalidImageError, ValueError) as error:
                return Rejected(DeadLetterReason.INFERENCE_ERROR, f"image rejected: {error}")

        async def inspect(frame: BatchFrame, prepared: tuple[FrameInput, tuple[int, int]] | Rejected) -> FrameOutcome:
            if isinstance(prepared, Rejected):
                self._observe(frame.domain, prepared, 0.0)
                return FrameOutcome.from_outcome(frame.frame_id, prepared)
            frame_input, original_size = prepared
            return FrameOutcome.from_outcome(frame.frame_id, await self._route(frame_input), original_size)

        ready = await asyncio.to_thread(lambda: [prepare(frame, part) for frame, part in zip(frames, parts)])
        return BatchInspectionResponse(outcomes=await asyncio.gather(*(inspect(f, p) for f, p in zip(frames, ready))))

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
