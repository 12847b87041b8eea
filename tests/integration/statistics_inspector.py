"""A deterministic stand-in for the detector: scores frames from image statistics, no model needed.

Behaves like a real inspect callable (per-domain thresholds, unknown domains refused, a coarse patch-grid
map in [0, 1]) so the streaming path can be tested end to end before the real detector is plugged in.
Run as a script it is a consumer process (used by the kill-and-restart test):
    python statistics_inspector.py   (settings from INCTRL_* env; INSPECT_DELAY_S slows each batch)
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence

import numpy as np
from PIL import Image

from services.consumer.frame_consumer import FrameConsumer
from services.protocol.outcomes import DecodedFrame, InspectionOutcome, Rejected, Scored
from services.protocol.messages import DeadLetterReason
from services.settings import ServiceSettings

DOMAIN_THRESHOLDS = {"washer": 0.5, "fabric": 0.5}
MAP_GRID = 16
MODEL_VERSION = "statistics-v1"
REFERENCE_VERSION = "median-reference"


def statistics_map(image: np.ndarray) -> np.ndarray:
    """|grey - median grey| averaged over a MAP_GRID x MAP_GRID patch grid, in [0, 1]."""
    grey = image.mean(axis=0).astype(np.float32)
    deviation = np.abs(grey - np.median(grey))
    pooled = Image.fromarray(deviation).resize((MAP_GRID, MAP_GRID), Image.Resampling.BOX)
    return np.clip(np.asarray(pooled, dtype=np.float32), 0.0, 1.0)


def inspect_by_statistics(frames: Sequence[DecodedFrame]) -> list[InspectionOutcome]:
    """Score = max of the statistics map; each frame scored on its own (batch-independent)."""
    outcomes = []
    for frame in frames:
        threshold = DOMAIN_THRESHOLDS.get(frame.request.domain)
        if threshold is None:
            outcomes.append(
                Rejected(DeadLetterReason.UNKNOWN_DOMAIN, f"no references for {frame.request.domain!r}")
            )
            continue
        anomaly_map = statistics_map(frame.image)
        outcomes.append(
            Scored(float(anomaly_map.max()), anomaly_map, threshold, MODEL_VERSION, REFERENCE_VERSION)
        )
    return outcomes


def _slow_inspect(delay_s: float):  # noqa: ANN202 - test script helper
    def inspect(frames: Sequence[DecodedFrame]) -> list[InspectionOutcome]:
        time.sleep(delay_s)
        return inspect_by_statistics(frames)

    return inspect


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    FrameConsumer.connect(ServiceSettings(), _slow_inspect(float(os.environ.get("INSPECT_DELAY_S", "0")))).run_forever()
