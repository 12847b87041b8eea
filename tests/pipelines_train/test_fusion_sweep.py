"""`inctrl bench fusion --sweep` (inctrl/dev/fusion_sweep.py): the frontier of worst-row loss against mean gain."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from typer.testing import CliRunner

from inctrl.cli import app
from inctrl.dev.fusion_bench import PATCH_ONLY, CategoryResult, Scored, evaluate
from inctrl.dev.fusion_sweep import Tradeoff, pareto_frontier, served_label, sweep_grid, tradeoffs
from model.config import FusionConfig


def test_the_grid_covers_every_weighting_and_gate_once() -> None:
    grid = sweep_grid()
    assert len(grid) == (4**3 - 1) * 4
    assert all(config.weights["patch"] == 1.0 for config in grid.values())
    assert grid["g 0.25, two-sided"] == FusionConfig(weights={"patch": 1.0, "global": 0.25})
    assert grid["s_i 0.05, a 0.1, gate 0"] == FusionConfig(weights={"patch": 1.0, "image": 0.05, "appearance": 0.1}, gate=0.0)


def test_the_frontier_keeps_only_the_undominated_best_worst_row_first() -> None:
    candidates = [
        Tradeoff("safe", {"local": 0.0, "global": 2.0}),
        Tradeoff("bold", {"local": -1.5, "global": 30.0}),
        Tradeoff("dominated", {"local": -0.5, "global": 1.0}),  # safe is better on both
        Tradeoff("between", {"local": -0.2, "global": 10.0}),
    ]
    frontier = pareto_frontier(candidates)
    assert [c.name for c in frontier] == ["safe", "between", "bold"]
    assert frontier[-1].worst == -1.5 and frontier[-1].mean == 14.25


def test_rows_that_share_references_but_not_defects_trade_off() -> None:
    """Two rows with the same normals and references: one's defects move g (a global shift), the other's only
    the patch score, weakly. Weighting g buys the first and costs the second; the frontier shows both ends."""
    generator = torch.Generator().manual_seed(0)
    labels = np.array([False] * 50 + [True] * 50)
    normals_g = 0.2 + 0.02 * torch.randn(50, generator=generator)
    references = {"patch": 0.1 + 0.01 * torch.randn(4, generator=generator), "global": 0.2 + 0.02 * torch.randn(4, generator=generator),
                  "image": 0.5 + 0.01 * torch.randn(4, generator=generator), "appearance": 0.1 + 0.01 * torch.randn(4, generator=generator)}  # fmt: skip
    normals_patch = 0.1 + 0.01 * torch.randn(50, generator=generator)

    def row(patch_defects: torch.Tensor, g_defects: torch.Tensor) -> list[Scored]:
        flat = lambda mean: mean + 0.01 * torch.randn(100, generator=generator)  # noqa: E731
        components = {"patch": torch.cat([normals_patch, patch_defects]), "global": torch.cat([normals_g, g_defects]),
                      "image": flat(0.5), "appearance": flat(0.1)}  # fmt: skip
        return [Scored(labels, components, references)]

    local = row(0.1 + 0.01 * torch.randn(50, generator=generator) + 0.01, 0.2 + 0.02 * torch.randn(50, generator=generator))
    shifted = row(0.1 + 0.01 * torch.randn(50, generator=generator), 0.3 + 0.02 * torch.randn(50, generator=generator))
    grid = sweep_grid()
    results: dict[str, CategoryResult] = {"local": evaluate(local, grid), "shifted": evaluate(shifted, grid)}
    frontier = pareto_frontier(tradeoffs(results, list(grid)))
    best_mean = max(frontier, key=lambda c: c.mean)
    assert best_mean.deltas["shifted"] > 20 and best_mean.deltas["local"] < 0  # g buys the shift, costs the specks
    assert frontier[0].worst > best_mean.worst and frontier[0].mean < best_mean.mean


def test_the_cli_prints_the_frontier(synthetic_root: Path, standardised_checkpoint: Path) -> None:
    command = ["bench", "fusion", "--checkpoint", str(standardised_checkpoint), "--data", str(synthetic_root), "--shots", "2", "--seeds", "1", "--sweep"]
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 0, result.output
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in result.output.splitlines() if line.startswith("| ")]
    assert rows[0] == ["fusion", "worst row", "mean", "brick", "capsule"]
    assert rows[1][0] == f"{PATCH_ONLY} (AUROC)" and all(0 <= float(v) <= 100 for v in rows[1][3:])
    frontier, served = rows[2:-1], rows[-1]
    worst = [float(row[1]) for row in frontier]
    means = [float(row[2]) for row in frontier]
    assert frontier and worst == sorted(worst, reverse=True) and means == sorted(means)  # a trade-off curve
    for row in frontier:
        assert row[0] in sweep_grid() and float(row[1]) == min(float(v) for v in row[3:])
    assert served[0] == "served default: s_i 0.25, g 0.25, two-sided" and float(served[1]) == min(float(v) for v in served[3:])


def test_the_served_default_is_found_in_the_grid_without_its_text_weight() -> None:
    assert FusionConfig().weights.get("text", 0) > 0  # the default names s_q, which image-only backbones drop
    label = served_label(sweep_grid())
    assert label is not None and sweep_grid()[label].weights == {k: w for k, w in FusionConfig().weights.items() if k != "text"}
    assert served_label({"other": FusionConfig(weights={"patch": 1.0, "global": 0.1})}) is None
