"""The server-side score histogram: counts as numpy bins them, bars split at the threshold, the threshold line."""
from __future__ import annotations

import re

import numpy as np
import pytest

from services.console.histogram import render_svg, score_histogram


def test_counts_match_numpy_and_cover_every_score() -> None:
    scores = np.random.default_rng(0).beta(2, 5, size=500)
    histogram = score_histogram(scores.tolist(), threshold=0.4, bins=10)
    expected, _ = np.histogram(scores, bins=10, range=(0.0, 1.0))
    assert histogram.counts == tuple(int(c) for c in expected) and histogram.total == 500
    # The last bin is closed: a score of exactly 1 is counted, not lost.
    assert score_histogram([1.0, 0.0], 0.5, bins=4).counts == (1, 0, 0, 1)


def test_svg_draws_bars_on_each_side_of_the_threshold_and_the_line_at_it() -> None:
    histogram = score_histogram([0.05, 0.15, 0.15, 0.62, 0.95], threshold=0.5, bins=10)
    svg = render_svg(histogram, "capsule <line-1>", width=400, height=140)
    assert svg.startswith("<svg") and svg.endswith("</svg>") and "capsule &lt;line-1&gt;" in svg
    normal_bins = {int(b) for b in re.findall(r'class="bar normal"[^>]*data-bin="(\d+)"', svg)}
    anomalous_bins = {int(b) for b in re.findall(r'class="bar anomalous"[^>]*data-bin="(\d+)"', svg)}
    assert normal_bins == {0, 1} and anomalous_bins == {6, 9}
    heights = {int(b): float(h) for h, b in re.findall(r'height="([\d.]+)" data-bin="(\d+)"', svg)}
    assert heights[1] == pytest.approx(140 - 14 - 22)  # the fullest bin (2 scores) fills the plot height
    assert heights[0] == pytest.approx(heights[1] / 2)
    line_x = float(re.search(r'class="threshold" x1="([\d.]+)"', svg).group(1))
    assert line_x == pytest.approx(8 + 0.5 * (400 - 16))


def test_a_bin_cut_by_the_threshold_is_drawn_in_both_colours_and_empty_scores_draw_no_bars() -> None:
    svg = render_svg(score_histogram([0.42, 0.43], threshold=0.425, bins=10), "t")  # bin [0.4, 0.5), cut at 1/4
    widths = {css: float(w) for css, w in re.findall(r'class="bar (\w+)"[^>]*width="([\d.]+)"', svg)}
    assert widths["anomalous"] == pytest.approx(3 * widths["normal"], rel=1e-2)
    empty = render_svg(score_histogram([], threshold=0.3), "none")
    assert 'class="bar' not in empty and 'data-threshold="0.3000"' in empty and "n = 0" in empty
    with pytest.raises(ValueError, match="at least one bin"):
        score_histogram([0.1], 0.5, bins=0)
