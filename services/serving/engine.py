"""Mixed-domain inference: one backbone call for the whole batch, then per-domain scoring.

Device work only: frames arrive at the backbone's geometry (FrameInput, prepared where they were decoded)
and maps leave at model resolution (S, S) float16; restoring them to each frame's size is the writer's.

The backbone forward (the costly part) does not depend on the domain, so frames of every domain share
it; only the nearest-patch search, the text prototypes and the fusion use the domain's bank. Scores do
not depend on what else is in the batch (tested).

Failure isolation (DESIGN.md, failure taxonomy): whatever goes wrong is confined to what caused it.

    a frame's pixels are not what prepare_frame makes    -> that frame: Rejected
    a domain's bank cannot be loaded or used              -> that domain's frames: Rejected (UNKNOWN_DOMAIN
      (corrupt bank.safetensors or domain.json, a bank of    when it is not registered)
      another backbone or feature width, a device copy
      that fails)
    the backbone fails on the batch                       -> bisected until the failing frames are alone
    scoring one domain's group fails                      -> that group only
    transient trouble (CUDA out of memory, the object     -> the frames it touched: Retryable
      store unreachable)
"""
from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Sequence

import torch

from model import InCTRLv2, InvalidImageError, PromptBank
from services.imaging.geometry import check_prepared
from services.protocol.outcomes import FrameInput, InspectionOutcome, Rejected, Retryable, Scored
from services.protocol.messages import DeadLetterReason
from services.storage.object_store import ObjectStoreUnavailable
from services.registry.records import DomainRecord, RegisteredDomain, UnknownDomainError
from services.serving.bank_cache import BankCache

logger = logging.getLogger(__name__)

ThresholdPolicy = Callable[[DomainRecord], float]

# Nobody's input fault: the same frame may well succeed on the next try (another replica, less load).
_TRANSIENT: tuple[type[BaseException], ...] = (torch.cuda.OutOfMemoryError, ObjectStoreUnavailable, ConnectionError, TimeoutError)


def failure(error: BaseException, what: str) -> Rejected | Retryable:
    """The outcome of an error while handling `what`: Retryable when transient, else Rejected naming it."""
    detail = f"{what}: {type(error).__name__}: {error}"
    if isinstance(error, _TRANSIENT):
        if isinstance(error, torch.cuda.OutOfMemoryError):
            torch.cuda.empty_cache()
        return Retryable(detail)
    return Rejected(DeadLetterReason.INFERENCE_ERROR, detail)


def bank_mismatch(detector: InCTRLv2, bank: PromptBank) -> str | None:
    """Why a bank's features cannot meet this detector's (another backbone, or another shape); None when they can.

    The backbone id names the backbone, its weights and layers; the shapes catch what an id cannot (a bank
    written by hand, or by a checkpoint of another width under the same name) before it breaks a search.
    """
    if bank.backbone_id != detector.backbone_id:
        return f"its bank was built with {bank.backbone_id}, this detector uses {detector.backbone_id}"
    backbone = detector.backbone
    n_layers, rows, width = bank.patches.shape
    expected = {
        "embedding width": (bank.embeddings.shape[1], backbone.embed_dim),
        "patch layers": (n_layers, len(backbone.layers)),
        "patch width": (width, backbone.patch_dim),
        "patches per prompt": (rows // max(bank.shots, 1), backbone.num_patches),
    }
    wrong = {name: got for name, (got, want) in expected.items() if got != want}
    if not wrong:
        return None
    return f"bank has {wrong}, the detector needs { {name: want for name, (_, want) in expected.items()} }"


class InspectionEngine:
    """Scores frames of any domains with one detector and a bank cache."""

    def __init__(
        self,
        detector: InCTRLv2,
        banks: BankCache,
        threshold_for: ThresholdPolicy,
        model_version: str,
    ) -> None:
        self.detector = detector
        self.banks = banks
        self._threshold_for = threshold_for
        self.model_version = model_version

    @property
    def input_size(self) -> int:
        """S: frames must arrive as (3, S, S) pixels."""
        return self.detector.backbone.image_size

    def inspect(self, frames: Sequence[FrameInput]) -> list[InspectionOutcome]:
        """One outcome per frame, in order; never raises for anything one frame or one domain brings."""
        outcomes: dict[int, InspectionOutcome] = {}
        geometry = self._geometry(frames, outcomes)
        banks = self._banks({frames[i].domain for i in geometry}, frames, geometry, outcomes)
        ready = [i for i in geometry if frames[i].domain in banks]
        features = self._encode(ready, geometry, frames, outcomes)
        groups: dict[str, list[int]] = defaultdict(list)
        for i in features:
            groups[frames[i].domain].append(i)
        for domain, members in groups.items():
            try:
                scored = self._score_group(frames, members, features, banks[domain])
            except Exception as error:  # noqa: BLE001 - whatever breaks this domain's group stays in it
                logger.exception("scoring a domain's frames failed", extra={"domain": domain, "frames": len(members)})
                scored = dict.fromkeys(members, failure(error, f"scoring {len(members)} frame(s) of domain {domain!r}"))
            outcomes.update(scored)
        logger.debug("batch scored", extra={"frames": len(frames), "domains": len(groups)})
        return [outcomes[i] for i in range(len(frames))]

    def _geometry(self, frames: Sequence[FrameInput], outcomes: dict[int, InspectionOutcome]) -> dict[int, torch.Tensor]:
        """Each frame's pixels as a tensor; a frame whose pixels are not at the backbone's geometry is rejected alone."""
        prepared = {}
        for i, frame in enumerate(frames):
            what = f"frame {i} of domain {frame.domain!r}"
            try:
                prepared[i] = check_prepared(frame.pixels, self.input_size, what)
            except InvalidImageError as error:
                outcomes[i] = Rejected(DeadLetterReason.INFERENCE_ERROR, str(error))
            except Exception as error:  # noqa: BLE001 - e.g. an array torch cannot take; it is this frame's alone
                outcomes[i] = failure(error, f"{what}: unusable pixels")
        return prepared

    def _banks(
        self,
        domains: set[str],
        frames: Sequence[FrameInput],
        geometry: dict[int, torch.Tensor],
        outcomes: dict[int, InspectionOutcome],
    ) -> dict[str, RegisteredDomain]:
        """Each domain's bank, checked against the detector; a domain that cannot be served fails its frames."""
        banks = {}
        for domain in sorted(domains):
            outcome: InspectionOutcome
            try:
                registered = self.banks.get(domain)
                mismatch = bank_mismatch(self.detector, registered.bank)
                if mismatch is not None:
                    raise ValueError(mismatch)
            except UnknownDomainError as error:
                outcome = Rejected(DeadLetterReason.UNKNOWN_DOMAIN, str(error))
            except Exception as error:  # noqa: BLE001 - a corrupt record or bank, or a failed device copy
                outcome = failure(error, f"domain {domain!r} cannot be served")
                logger.warning("domain cannot be served", extra={"domain": domain, "error": outcome.detail})
            else:
                banks[domain] = registered
                continue
            for i in geometry:
                if frames[i].domain == domain:
                    outcomes[i] = outcome
        return banks

    def _encode(
        self,
        ready: list[int],
        geometry: dict[int, torch.Tensor],
        frames: Sequence[FrameInput],
        outcomes: dict[int, InspectionOutcome],
    ) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        """Backbone features per frame, one call for all; on failure halves are retried until the culprits are alone."""
        features: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        pending = [ready] if ready else []
        while pending:
            chunk = pending.pop()
            try:
                embedding, patches = self.detector.encode(torch.stack([geometry[i] for i in chunk]))
            except Exception as error:  # noqa: BLE001 - bisect: the failure belongs to some of these frames only
                if len(chunk) > 1:
                    logger.warning("backbone failed on a batch, splitting it", extra={"frames": len(chunk), "error": repr(error)})
                    if isinstance(error, torch.cuda.OutOfMemoryError):
                        torch.cuda.empty_cache()
                    half = len(chunk) // 2
                    pending += [chunk[half:], chunk[:half]]
                else:
                    i = chunk[0]
                    outcomes[i] = failure(error, f"frame {i} of domain {frames[i].domain!r}: backbone failed")
                continue
            for row, i in enumerate(chunk):
                features[i] = (embedding[row], patches[row])
        return features

    def _score_group(
        self,
        frames: Sequence[FrameInput],
        members: list[int],
        features: dict[int, tuple[torch.Tensor, torch.Tensor]],
        registered: RegisteredDomain,
    ) -> dict[int, InspectionOutcome]:
        """One domain's frames against its bank; maps at model resolution, one device-to-host copy for the group."""
        size = self.input_size
        embedding = torch.stack([features[i][0] for i in members])
        patches = torch.stack([features[i][1] for i in members])
        detection = self.detector.score(embedding, patches, registered.bank, (size, size))
        threshold = self._threshold_for(registered.record)
        scored: dict[int, InspectionOutcome] = {}
        maps = detection.maps.to(torch.float16).cpu().numpy()
        scores = detection.scores.float().cpu().tolist()
        for k, i in enumerate(members):
            scored[i] = Scored(
                score=scores[k],
                anomaly_map=maps[k],
                threshold=threshold,
                model_version=self.model_version,
                reference_version=registered.record.reference_version,
                map_threshold=registered.record.calibration.pixel_threshold,
                map_range=registered.record.calibration.map_range,
            )
        return scored
