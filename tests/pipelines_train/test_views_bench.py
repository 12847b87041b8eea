"""`inctrl bench views` (inctrl/dev/views_bench.py): both ablations on a real checkpoint and synthetic set."""
from __future__ import annotations

import re
from pathlib import Path

from typer.testing import CliRunner

from inctrl.cli import app
from inctrl.dev.views_bench import THRESHOLD_ARMS
from model import InCTRLv2, InCTRLv2Config
from model.config import FusionConfig
from model.nuisance import NuisanceViews


def _bench(checkpoint: Path, data: Path) -> list[list[str]]:
    result = CliRunner().invoke(app, ["bench", "views", "--checkpoint", str(checkpoint), "--data", str(data), "--shots", "2", "--seeds", "2"])
    assert result.exit_code == 0, result.output
    rows = [line.strip("|").split("|") for line in result.output.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in row] for row in rows[1:]]  # without the header


def test_views_bench_reports_both_ablations_per_category_and_pooled(synthetic_root: Path, tmp_path: Path) -> None:
    config = InCTRLv2Config(backbone="tiny", pretrained=None, fusion=FusionConfig(image="standardised"))
    rows = _bench(InCTRLv2(config).save(tmp_path / "views"), synthetic_root)
    assert [row[0] for row in rows] == ["brick", "capsule", "**all**"]
    for row in rows:
        assert all(0.0 <= float(cell) <= 100.0 for cell in row[1:4])
        assert len(row) == 4 + len(THRESHOLD_ARMS)
        counts = [re.search(r"\((\d+)/(\d+)\)", cell).groups() for cell in row[4:]]  # type: ignore[union-attr]
        expected = 2 * 3 * (2 if row[0] == "**all**" else 1)  # draws x 3 normal test images, per category
        assert all(int(total) == expected and int(alarms) <= expected for alarms, total in counts)
    # The arms are two detectors: the exposure views move g's standardisation, and with it some ranking.
    assert any(row[1] != row[2] for row in rows)


def test_without_exposure_views_configured_both_ranking_arms_are_the_same_detector(synthetic_root: Path, tmp_path: Path) -> None:
    config = InCTRLv2Config(backbone="tiny", pretrained=None, fusion=FusionConfig(image="standardised", global_views=NuisanceViews(count=0)))
    rows = _bench(InCTRLv2(config).save(tmp_path / "no-views"), synthetic_root)
    assert all(row[1] == row[2] for row in rows)
