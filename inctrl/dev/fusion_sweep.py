"""`inctrl bench fusion --sweep`: how much average gain over max M_x a fusion can buy without losing on any row.

The issue's two ranking targets pull against each other wherever two rows share what the fusion adapts to
(the textile rows share their references and their normal frames; only the defects differ), so the question
is not "which fusion is best" but "what is the best mean gain at a given worst-row loss". For a grid of
standardised fusions (weights of s_i, g and a against max M_x's 1, two-sided or gated; model/fusion.py) on the
SAME components as `inctrl bench fusion`, each fusion's image AUROC per row minus max M_x's gives

    worst(f) = min_rows delta_row(f),    mean(f) = mean_rows delta_row(f),

and the table lists the Pareto frontier: every fusion that no other beats on both. Read it as a trade-off
curve, row by row; it chooses nothing. On the evaluation sets it measures what is achievable, never a
default (defaults are chosen on validation: benchmarks/fusion.md).
"""
from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from inctrl.dev.fusion_bench import PATCH_ONLY, CategoryResult, evaluate, score_rows
from model.config import FusionConfig

SWEEP_WEIGHTS = (0.0, 0.05, 0.1, 0.25)
SWEEP_GATES: tuple[float | None, ...] = (None, 0.0, 1.0, 2.0)
_SHORT = {"image": "s_i", "global": "g", "appearance": "a"}


def sweep_grid() -> dict[str, FusionConfig]:
    """Every weighting of s_i, g, a in SWEEP_WEIGHTS (not all zero) under every gate in SWEEP_GATES, by label."""
    grid: dict[str, FusionConfig] = {}
    for values in itertools.product(SWEEP_WEIGHTS, repeat=len(_SHORT)):
        if not any(values):
            continue
        extras = {name: w for name, w in zip(_SHORT, values) if w > 0}
        for gate in SWEEP_GATES:
            label = ", ".join(f"{_SHORT[name]} {w:g}" for name, w in extras.items())
            label += ", two-sided" if gate is None else f", gate {gate:g}"
            grid[label] = FusionConfig(weights={"patch": 1.0, **extras}, gate=gate)
    return grid


@dataclass(frozen=True)
class Tradeoff:
    """One fusion's image AUROC per row minus max M_x's (points), with its worst row and mean."""

    name: str
    deltas: dict[str, float]

    @property
    def worst(self) -> float:
        return min(self.deltas.values())

    @property
    def mean(self) -> float:
        return float(np.mean(list(self.deltas.values())))


def tradeoffs(results: Mapping[str, CategoryResult], names: list[str]) -> list[Tradeoff]:
    """Per fusion in ``names``: 100 * (mean AUROC over draws - max M_x's) on every row of ``results``."""
    patch = {row: float(np.mean(result.auroc[PATCH_ONLY])) for row, result in results.items()}
    return [
        Tradeoff(name, {row: 100 * (float(np.mean(result.auroc[name])) - patch[row]) for row, result in results.items()})
        for name in names
    ]


def pareto_frontier(candidates: list[Tradeoff]) -> list[Tradeoff]:
    """The candidates no other one beats on both worst and mean (ties kept), best worst row first."""
    frontier = [
        c for c in candidates
        if not any(o.worst >= c.worst and o.mean >= c.mean and (o.worst > c.worst or o.mean > c.mean) for o in candidates)
    ]  # fmt: skip
    return sorted(frontier, key=lambda c: (-c.worst, -c.mean, c.name))


def served_label(grid: Mapping[str, FusionConfig]) -> str | None:
    """The grid's entry for the default fusion (FusionConfig()) on an image-only backbone, if the grid holds it."""
    served = FusionConfig()
    image_only = {name: w for name, w in served.weights.items() if name != "text" and w > 0}
    return next((label for label, c in grid.items() if c.weights == image_only and c.gate == served.gate), None)


def render_frontier(results: Mapping[str, CategoryResult], grid: Mapping[str, FusionConfig]) -> str:
    """The frontier of ``grid`` on the rows of ``results`` as a markdown table, max M_x's own AUROC on top and
    the served default's row last (on the frontier or not)."""
    rows = list(results)
    everything = tradeoffs(results, list(grid))
    frontier = pareto_frontier(everything)
    served = served_label(grid)
    patch = [f"{100 * np.mean(results[row].auroc[PATCH_ONLY]):.2f}" for row in rows]
    lines = [
        f"{len(frontier)} of {len(grid)} fusions on the frontier; cells: image AUROC minus max M_x's (points)",
        "",
        "| fusion | worst row | mean | " + " | ".join(rows) + " |",
        "|---|---|---|" + "---|" * len(rows),
        f"| {PATCH_ONLY} (AUROC) | | | " + " | ".join(patch) + " |",
    ]

    def line(label: str, c: Tradeoff) -> str:
        return f"| {label} | {c.worst:+.2f} | {c.mean:+.2f} | " + " | ".join(f"{c.deltas[row]:+.2f}" for row in rows) + " |"

    lines += [line(c.name, c) for c in frontier]
    lines += [line(f"served default: {c.name}", c) for c in everything if c.name == served]
    return "\n".join(lines)


def run_fusion_sweep(
    checkpoint: Path, dataset: str, root: Path, categories: list[str] | None, shots: int, seeds: int, shifted: bool
) -> str:
    rows = score_rows(checkpoint, dataset, root, categories, shots, seeds, shifted)
    grid = sweep_grid()
    return render_frontier({name: evaluate(scored, grid) for name, scored in rows.items()}, grid)
