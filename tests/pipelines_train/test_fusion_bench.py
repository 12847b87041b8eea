"""`inctrl bench fusion` (inctrl/dev/fusion_bench.py): candidate fusions on the same components."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from inctrl.cli import app
from inctrl.dev.fusion_bench import CANDIDATES, PATCH_ONLY, SHIFT_KINDS, Scored, evaluate, global_shift


def test_bench_reports_every_candidate_per_category_with_its_shifted_row(synthetic_root: Path, standardised_checkpoint: Path) -> None:
    command = ["bench", "fusion", "--checkpoint", str(standardised_checkpoint), "--data", str(synthetic_root), "--shots", "2", "--seeds", "2", "--shifted"]
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 0, result.output
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in result.output.splitlines() if line.startswith("| ")]
    assert rows[0] == ["category", PATCH_ONLY, *CANDIDATES]
    assert [row[0] for row in rows[1:]] == ["brick", "brick/shifted", "capsule", "capsule/shifted", "**mean**"]
    for row in rows[1:]:
        assert all(0.0 <= float(value) <= 100.0 for cell in row[1:] for value in cell.split(" / "))


def test_a_component_that_separates_lifts_only_the_candidates_that_weigh_it() -> None:
    generator = torch.Generator().manual_seed(0)
    labels = np.array([False] * 20 + [True] * 20)
    noise = lambda: torch.rand(40, generator=generator)  # noqa: E731
    components = {"patch": 0.1 + 0.001 * noise(), "image": 0.5 + 0.001 * noise(), "global": 0.2 + 0.05 * torch.from_numpy(labels).float() + 0.001 * noise()}
    references = {"patch": 0.1 + 0.01 * torch.rand(4, generator=generator), "image": 0.5 + 0.01 * torch.rand(4, generator=generator),
                  "global": 0.2 + 0.001 * torch.rand(4, generator=generator)}  # fmt: skip
    result = evaluate([Scored(labels, components, references)], CANDIDATES)
    auroc = {name: values[0] for name, values in result.auroc.items()}
    assert auroc["served"] > 0.9 and auroc["no s_i, one-sided"] > 0.9  # g far outside its normal range
    assert auroc["no g, one-sided"] < 0.8 and auroc[PATCH_ONLY] < 0.8


@pytest.mark.parametrize("kind", SHIFT_KINDS)
def test_each_global_shift_changes_the_whole_image_and_stays_in_range(kind: str) -> None:
    image = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(1)) * 0.8 + 0.1
    shifted = global_shift(image, kind, torch.Generator().manual_seed(2))
    assert shifted.shape == image.shape and 0.0 <= float(shifted.min()) and float(shifted.max()) <= 1.0
    assert float((shifted - image).abs().mean()) > 0.005


def test_an_unknown_shift_is_named() -> None:
    with pytest.raises(ValueError, match="unknown global shift 'rotate'"):
        global_shift(torch.rand(3, 8, 8), "rotate", torch.Generator())
