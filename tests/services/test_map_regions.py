"""Defect regions against the pixel threshold (boxes, area, regions) and overlays drawn on the domain's
calibrated colour range with the region's outline; the result writer carries both."""
from __future__ import annotations

import io
import time
from datetime import datetime, timezone

import numpy as np
from PIL import Image

from services.protocol.outcomes import Scored
from services.results.map_regions import MAX_BOXES, defect_boxes, map_statistics
from services.protocol.messages import InspectionRequest, MapStatistics
from services.results.encoding import region_outline, render_overlay_jpeg
from services.results.writer import encode_result, write_result


def _square_map() -> np.ndarray:
    """A faint map (0.20-0.25, what trained maps look like) with a 20 x 30 square at 0.32."""
    rng = np.random.default_rng(0)
    values = 0.20 + 0.05 * rng.random((96, 128))
    values[40:60, 70:100] = 0.32
    return values.astype(np.float32)


def _decoded(jpeg: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB")).astype(np.int32)


def test_box_matches_a_drawn_square() -> None:
    regions, boxes = defect_boxes(_square_map(), 0.3)
    assert regions == 1
    (box,) = boxes
    assert (box.x_min, box.y_min, box.x_max, box.y_max, box.area) == (70, 40, 99, 59, 600)
    assert box.peak == np.float32(0.32)


def test_regions_are_eight_connected_and_ordered_by_peak() -> None:
    values = np.zeros((20, 20), dtype=np.float32)
    values[2, 2] = values[3, 3] = 0.6  # diagonal neighbours: one region
    values[10:12, 10:14] = 0.9
    values[18, 0] = 0.5
    regions, boxes = defect_boxes(values, 0.5)
    assert regions == 3
    assert [(b.x_min, b.y_min, b.x_max, b.y_max) for b in boxes] == [(10, 10, 13, 11), (2, 2, 3, 3), (0, 18, 0, 18)]
    assert defect_boxes(values, 0.95) == (0, [])


def test_box_list_is_capped_but_regions_counts_all() -> None:
    values = np.zeros((4, 4 * (MAX_BOXES + 5)), dtype=np.float32)
    values[1, ::4] = np.linspace(0.5, 1.0, MAX_BOXES + 5)
    regions, boxes = defect_boxes(values, 0.5)
    assert regions == MAX_BOXES + 5 and len(boxes) == MAX_BOXES and boxes[0].peak == 1.0


def test_statistics_area_and_old_events_still_load() -> None:
    statistics = map_statistics(_square_map(), 0.3, (0.2, 0.4))
    assert statistics.area_above_threshold == 600 / (96 * 128) and statistics.regions == 1
    assert statistics.display_range == (0.2, 0.4)
    old = MapStatistics.model_validate({"max": 0.3, "mean": 0.1, "threshold": 0.5, "area_above_threshold": 0.0})
    assert old.boxes == [] and old.regions == 0 and old.display_range is None


def test_outline_is_the_boundary_of_the_region() -> None:
    mask = np.zeros((10, 10), dtype=bool)
    mask[2:7, 3:8] = True
    outline = region_outline(mask)
    assert outline.sum() == 16 and outline[2, 3] and outline[6, 7] and not outline[4, 5] and not outline[0, 0]


def test_overlay_on_the_calibrated_range_shows_the_defect_the_absolute_scale_hides() -> None:
    grey = np.full((3, 96, 128), 0.5, dtype=np.float32)
    values = _square_map()
    inside, outside = (slice(44, 56), slice(75, 95)), (slice(5, 30), slice(5, 50))
    absolute = _decoded(render_overlay_jpeg(grey, values, opacity=1.0))
    # On [0, 1] both 0.22 and 0.32 are blue to cyan: nothing turns red or yellow.
    assert absolute[inside][..., 0].mean() < 30 and absolute[outside][..., 0].mean() < 30
    calibrated = _decoded(render_overlay_jpeg(grey, values, opacity=1.0, value_range=(0.2, 0.34), outline_threshold=0.3))
    red_inside, red_outside = calibrated[inside][..., 0].mean(), calibrated[outside][..., 0].mean()
    blue_inside, blue_outside = calibrated[inside][..., 2].mean(), calibrated[outside][..., 2].mean()
    assert red_inside > 200 and red_outside < 60 and blue_outside > 150 and blue_inside < 60
    # The outline is white on the square's border, not in its middle.
    assert calibrated[40, 85].min() > 200 and calibrated[50, 85].min() < 200


def _request() -> InspectionRequest:
    return InspectionRequest(frame_id="f1", domain="capsule", line="l1", timestamp=datetime.now(timezone.utc), image=b"x")


def test_result_writer_reports_boxes_against_the_pixel_threshold() -> None:
    outcome = Scored(score=0.9, anomaly_map=_square_map(), threshold=0.5, model_version="m", reference_version="capsule/v1",
                     map_threshold=0.3, map_range=(0.2, 0.34))  # fmt: skip
    image = np.full((3, 96, 128), 0.5, dtype=np.float32)
    statistics = encode_result(_request(), image, outcome, "b").result.map_statistics
    assert statistics.threshold == 0.3 and statistics.regions == 1 and statistics.boxes[0].x_min == 70
    result = write_result(_request(), image, outcome, time.monotonic(), "b", None)
    assert result.map_statistics.boxes == statistics.boxes and result.map_statistics.display_range == (0.2, 0.34)
    # Without a calibrated pixel threshold the image threshold stands in (records from before calibration).
    legacy = Scored(score=0.9, anomaly_map=_square_map(), threshold=0.3, model_version="m", reference_version="capsule/v1")
    legacy_statistics = encode_result(_request(), image, legacy, "b").result.map_statistics
    assert legacy_statistics.regions == 1 and legacy_statistics.display_range is None
