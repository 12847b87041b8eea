"""Drift statistics of a window of image scores against a domain's calibration scores: PSI and two-sample KS.

Population stability index (the alert criterion). Bins come from the calibration ("reference") scores
r_1..r_n: B = min(bins, n) bins with edges at the reference quantiles j/B, j = 1..B-1 (duplicates merged,
outer bins open to -inf and +inf, so every score falls in one). With p_i, q_i the reference and window
fractions in bin i, additively smoothed so an empty bin does not give log 0,

    p_i = (c_i(r) + 1/2) / (n + B/2)        q_i = (c_i(w) + 1/2) / (m + B/2)
    PSI = sum_i (q_i - p_i) * ln(q_i / p_i)           (>= 0; 0 when the histograms agree)

Usual reading: PSI < 0.1 stable, 0.1-0.25 moderate shift, >= 0.25 a shift worth acting on (the default
alert level). PSI depends on how many scores fill the bins: with a small window even an unchanged line
shows PSI > 0 from sampling noise (about (B-1)/(2m) + (B-1)/(2n) in expectation), hence a minimum window.

Because of that noise floor, the watch alerts only when both tests agree: PSI at or above the level (the
shift is large) AND the KS p-value at or below alpha (it is not sampling noise of a small window or of a
reference of a few leave-one-out scores). See services/index/drift.py for the hysteresis.

Two-sample Kolmogorov-Smirnov: D = sup_x |F_w(x) - F_r(x)| over the
two empirical CDFs; asymptotic p-value (Numerical Recipes' Q_KS with the small-sample correction)

    n_e = n m / (n + m),  lambda = (sqrt(n_e) + 0.12 + 0.11 / sqrt(n_e)) D
    p = Q_KS(lambda) = 2 sum_{k>=1} (-1)^(k-1) exp(-2 k^2 lambda^2)     (clipped to [0, 1])
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field


class DriftReading(BaseModel):
    """PSI and KS of one window against one reference."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    psi: float = Field(ge=0.0)
    ks_statistic: float = Field(ge=0.0, le=1.0)
    p_value: float = Field(ge=0.0, le=1.0)
    window_size: int = Field(ge=1)
    reference_size: int = Field(ge=1)
    bins: int = Field(ge=1)


def bin_edges(reference: np.ndarray, bins: int) -> np.ndarray:
    """Interior bin edges: reference quantiles j/B, j = 1..B-1, B = min(bins, n), duplicates merged."""
    count = min(bins, len(reference))
    return np.unique(np.quantile(reference, np.arange(1, count) / count))


def population_stability_index(window: np.ndarray, reference: np.ndarray, edges: np.ndarray) -> float:
    """PSI of the window against the reference over the given interior edges (see the module docstring)."""
    slots = len(edges) + 1
    ref_counts = np.bincount(np.searchsorted(edges, reference, side="right"), minlength=slots)
    win_counts = np.bincount(np.searchsorted(edges, window, side="right"), minlength=slots)
    p = (ref_counts + 0.5) / (len(reference) + 0.5 * slots)
    q = (win_counts + 0.5) / (len(window) + 0.5 * slots)
    return float(max(0.0, np.sum((q - p) * np.log(q / p))))


def ks_two_sample(window: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """(D, asymptotic p-value) of the two-sample Kolmogorov-Smirnov test."""
    points = np.concatenate([window, reference])
    cdf_w = np.searchsorted(np.sort(window), points, side="right") / len(window)
    cdf_r = np.searchsorted(np.sort(reference), points, side="right") / len(reference)
    statistic = float(np.max(np.abs(cdf_w - cdf_r)))
    effective = len(window) * len(reference) / (len(window) + len(reference))
    root = math.sqrt(effective)
    lam = (root + 0.12 + 0.11 / root) * statistic
    return statistic, _kolmogorov_q(lam)


def _kolmogorov_q(lam: float) -> float:
    if lam < 1e-3:
        return 1.0
    total, sign = 0.0, 1.0
    for k in range(1, 101):
        term = sign * math.exp(-2.0 * k * k * lam * lam)
        total += term
        if abs(term) < 1e-12:
            break
        sign = -sign
    return min(1.0, max(0.0, 2.0 * total))


def drift_reading(window: Sequence[float], reference: Sequence[float], bins: int) -> DriftReading:
    """PSI and KS of a non-empty window against a non-empty reference."""
    w = np.asarray(window, dtype=np.float64)
    r = np.asarray(reference, dtype=np.float64)
    if len(w) == 0 or len(r) == 0:
        raise ValueError(f"drift needs scores on both sides (window {len(w)}, reference {len(r)})")
    edges = bin_edges(r, bins)
    statistic, p_value = ks_two_sample(w, r)
    return DriftReading(
        psi=population_stability_index(w, r, edges), ks_statistic=statistic, p_value=p_value,
        window_size=len(w), reference_size=len(r), bins=len(edges) + 1,
    )  # fmt: skip
