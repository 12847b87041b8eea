"""The detector replica: loads the checkpoint once and scores batches of prepared frames of any domains.

Batch knobs (max_batch_size, batch_wait_timeout_s) arrive as the deployment's user_config and are applied by
reconfigure(), so changing them in serveConfigV2 re-tunes live replicas without reloading the model.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from ray import serve

from services.protocol.outcomes import FrameInput, InspectionOutcome
from services.registry.domain_registry import DomainRegistry
from services.registry.records import DomainRecord
from services.registry.references import load_reference_images
from services.serving.bank_cache import BankCache
from services.serving.checkpoint_source import load_detector
from services.serving.deployment_config import BatchSettings, DeploymentConfig
from services.serving.engine import InspectionEngine
from services.serving.http_api import DomainRegistration
from services.serving.settings import ServingSettings
from services.settings import ServiceSettings
from services.storage.object_store import ObjectStore

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScoredFrame:
    """A replica's answer for one frame, with the size of the backbone batch it rode in and its share of the
    replica's CPU time for that batch (process time, all threads)."""

    outcome: InspectionOutcome
    batch_size: int
    cpu_s: float


@serve.deployment
class DetectorDeployment:
    """One detector, a bank cache, the engine; everything else (decoding, resampling, encoding) is done
    where the frame was decoded."""

    def __init__(self, config: DeploymentConfig, serves: str) -> None:
        settings, serving = ServiceSettings(), ServingSettings()
        store = ObjectStore.from_settings(settings)
        detector, model_version = load_detector(config.checkpoint_uri, store, config.nn_backend, config.backbone)
        self._registry = DomainRegistry(store, config.registry_prefix, max_references=serving.max_references)
        self._store = store
        banks = BankCache(self._registry, detector.device, serving.bank_cache_size, serving.bank_recheck_s)

        def threshold_for(record: DomainRecord) -> float:
            explicit = config.threshold_for(record.name)
            return record.threshold if explicit is None else explicit

        self._engine = InspectionEngine(detector, banks, threshold_for, model_version)
        self._serves = serves
        logger.info("detector replica ready", extra={"serves": serves, "model_version": model_version})

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Apply the batch knobs of this deployment's user_config (BatchSettings fields)."""
        batch = BatchSettings.model_validate(user_config)
        self.score.set_max_batch_size(batch.max_batch_size)
        self.score.set_batch_wait_timeout_s(batch.batch_wait_timeout_s)
        logger.info("batching configured", extra={"serves": self._serves, **batch.model_dump()})

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01)
    async def score(self, frames: list[FrameInput]) -> list[ScoredFrame]:
        """Batched by Serve; the model runs in a worker thread so new requests keep queueing meanwhile."""
        started = time.process_time()
        outcomes = await asyncio.to_thread(self._engine.inspect, frames)
        share = (time.process_time() - started) / len(frames)
        return [ScoredFrame(outcome, len(frames), share) for outcome in outcomes]

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
