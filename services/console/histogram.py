"""A domain's score histogram against its threshold, drawn server-side as an inline SVG (no scripts, no CDN).

Scores lie in [0, 1]; the histogram has `bins` equal bins over [0, 1] (the last one closed), counts as
numpy.histogram gives them. Bars left of the threshold are drawn as normal, bars whose lower edge is at or
above it as anomalous; a bin the threshold cuts is split into its two colours by the share of its width
on each side (a drawing choice: the counts themselves are not split). The threshold is a vertical line.
"""
from __future__ import annotations

from collections.abc import Sequence
from html import escape

import numpy as np
from pydantic import BaseModel, ConfigDict, Field


class ScoreHistogram(BaseModel):
    """Counts per bin over [0, 1] and the threshold they are read against."""

    model_config = ConfigDict(frozen=True)

    counts: tuple[int, ...]
    threshold: float = Field(ge=0.0, le=1.0)

    @property
    def total(self) -> int:
        return sum(self.counts)

    @property
    def edges(self) -> np.ndarray:
        return np.linspace(0.0, 1.0, len(self.counts) + 1)


def score_histogram(scores: Sequence[float], threshold: float, bins: int = 20) -> ScoreHistogram:
    """Bin scores in [0, 1]; values outside are clipped (the index only holds validated scores)."""
    if bins < 1:
        raise ValueError(f"a histogram needs at least one bin, got {bins}")
    values = np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0)
    counts, _ = np.histogram(values, bins=bins, range=(0.0, 1.0))
    return ScoreHistogram(counts=tuple(int(c) for c in counts), threshold=threshold)


def render_svg(histogram: ScoreHistogram, title: str, width: int = 360, height: int = 140) -> str:
    """The histogram as an accessible <svg> element: bars, the threshold line, axis ticks at 0, 0.5, 1."""
    pad_left, pad_right, pad_top, pad_bottom = 8, 8, 14, 22
    plot_w, plot_h = width - pad_left - pad_right, height - pad_top - pad_bottom
    tallest = max(histogram.counts, default=0) or 1
    bin_w = plot_w / len(histogram.counts)
    x_of = lambda value: pad_left + value * plot_w  # noqa: E731 - a local coordinate map
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="histogram" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        f'<line class="axis" x1="{pad_left}" y1="{pad_top + plot_h}" x2="{pad_left + plot_w}" y2="{pad_top + plot_h}"/>',
    ]
    for index, (count, low, high) in enumerate(zip(histogram.counts, histogram.edges[:-1], histogram.edges[1:])):
        if count == 0:
            continue
        bar_h = plot_h * count / tallest
        y = pad_top + plot_h - bar_h
        normal_share = float(np.clip((histogram.threshold - low) / (high - low), 0.0, 1.0))
        x = pad_left + index * bin_w
        for css, start, share in (("normal", 0.0, normal_share), ("anomalous", normal_share, 1.0 - normal_share)):
            if share > 0:
                parts.append(
                    f'<rect class="bar {css}" x="{x + start * bin_w:.2f}" y="{y:.2f}" width="{share * bin_w:.2f}" '
                    f'height="{bar_h:.2f}" data-bin="{index}" data-count="{count}"/>'
                )
    line_x = x_of(histogram.threshold)
    parts.append(
        f'<line class="threshold" x1="{line_x:.2f}" y1="{pad_top - 4}" x2="{line_x:.2f}" y2="{pad_top + plot_h}" '
        f'data-threshold="{histogram.threshold:.4f}"/>'
    )
    # The label sits on the side of the line with room for it.
    label_x, anchor = (line_x - 3, "end") if histogram.threshold > 0.6 else (line_x + 3, "start")
    parts.append(
        f'<text class="label" x="{label_x:.2f}" y="{pad_top - 4}" text-anchor="{anchor}">threshold {histogram.threshold:.3f}</text>'
    )
    for tick in (0.0, 0.5, 1.0):
        anchor = {0.0: "start", 0.5: "middle", 1.0: "end"}[tick]
        parts.append(f'<text class="tick" x="{x_of(tick):.2f}" y="{height - 6}" text-anchor="{anchor}">{tick:g}</text>')
    parts.append(f'<text class="tick" x="{x_of(0.25):.2f}" y="{height - 6}" text-anchor="middle">n = {histogram.total}</text>')
    parts.append("</svg>")
    return "".join(parts)
