"""The FrameConsumer's `inspect` callable over a Ray handle, where the consumer runs inside the Ray cluster."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from ray import serve

from services.protocol.outcomes import DecodedFrame, FrameInput, InspectionOutcome, InspectionUnavailable
from services.serving.settings import ServingSettings

_HEALTH_TIMEOUT_S = 2.0


class InspectionClient:
    """Sends a micro-batch of prepared frames to the running Serve app's ingress."""

    def __init__(self, app_name: str | None = None, timeout_s: float | None = None) -> None:
        serving = ServingSettings()
        self._handle = serve.get_app_handle(app_name or serving.serve_app_name)
        self._timeout_s = timeout_s or serving.inspect_timeout_s
        self._input_size: int | None = None

    def input_size(self) -> int:
        """S, the backbone's input size (asked once); InspectionUnavailable while the app cannot answer."""
        if self._input_size is None:
            try:
                self._input_size = int(self._handle.input_size.remote().result(timeout_s=self._timeout_s))
            except Exception as error:  # noqa: BLE001 - not deployed yet, or its replicas are down
                raise InspectionUnavailable(f"Serve app ingress did not give its input size: {type(error).__name__}: {error}") from error
        return self._input_size

    def __call__(self, frames: Sequence[DecodedFrame]) -> list[InspectionOutcome]:
        """One outcome per frame; InspectionUnavailable when the ingress itself cannot be reached in time."""
        inputs = [FrameInput(frame.request.domain, _prepared(frame)) for frame in frames]
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


def _prepared(frame: DecodedFrame) -> np.ndarray:
    if frame.pixels is None:
        raise ValueError(f"frame {frame.request.frame_id}: not prepared (the consumer sets DecodedFrame.pixels)")
    return frame.pixels
