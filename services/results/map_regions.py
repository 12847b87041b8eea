"""Defect regions of an anomaly map: the pixels at or above the domain's pixel threshold, their
8-connected components and bounding boxes, and the map statistics every result carries."""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from services.protocol.messages import DefectBox, MapStatistics

MAX_BOXES = 16  # keeps result events small; `regions` still counts them all
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def defect_boxes(anomaly_map: np.ndarray, threshold: float, limit: int = MAX_BOXES) -> tuple[int, list[DefectBox]]:
    """(number of regions, boxes of the `limit` regions with the highest peaks, highest first)."""
    above = anomaly_map >= threshold
    if not above.any():  # most frames: nothing to label
        return 0, []
    labels, count = ndimage.label(above, structure=_EIGHT_CONNECTED)
    areas = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    slices = ndimage.find_objects(labels)
    # Each peak within its own bounding box: ndimage.maximum would sort the whole map.
    peaks = [float(anomaly_map[box][labels[box] == i + 1].max()) for i, box in enumerate(slices)]
    order = sorted(range(count), key=lambda i: (-peaks[i], -areas[i]))[:limit]
    boxes = [
        DefectBox(
            x_min=slices[i][1].start, y_min=slices[i][0].start, x_max=slices[i][1].stop - 1, y_max=slices[i][0].stop - 1,
            area=int(areas[i]), peak=float(min(1.0, max(0.0, peaks[i]))),
        )  # fmt: skip
        for i in order
    ]
    return count, boxes


def map_statistics(anomaly_map: np.ndarray, threshold: float, display_range: tuple[float, float] | None = None) -> MapStatistics:
    """Max, mean, the area and regions at or above `threshold` of a validated (H, W) map in [0, 1]."""
    regions, boxes = defect_boxes(anomaly_map, threshold)
    return MapStatistics(
        max=float(anomaly_map.max()),
        mean=float(anomaly_map.mean()),
        threshold=float(threshold),
        area_above_threshold=float((anomaly_map >= threshold).mean()),
        regions=regions,
        boxes=boxes,
        display_range=display_range,
    )
