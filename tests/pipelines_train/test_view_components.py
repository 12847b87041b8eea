"""`inctrl bench views --components` (inctrl/dev/view_components.py): each component's z per source of normals."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from inctrl.cli import app
from inctrl.dev.view_components import SOURCES, VIEW_KINDS, component_z
from model import InCTRLv2, InCTRLv2Config
from model.calibration import CALIBRATION_VIEWS
from model.config import FusionConfig
from model.nuisance import NuisanceViews


def test_each_view_kind_varies_only_its_own_nuisance() -> None:
    kinds = {name: (views.gain, views.shift, views.gradient) for name, views in VIEW_KINDS.items()}
    assert kinds["views: exposure only"] == (CALIBRATION_VIEWS.gain, 0.0, 0.0)
    assert kinds["views: shift only"] == (0.0, CALIBRATION_VIEWS.shift, 0.0)
    assert kinds["views: gradient only"] == (0.0, 0.0, CALIBRATION_VIEWS.gradient)
    assert VIEW_KINDS["views: as calibrated"] == CALIBRATION_VIEWS


def test_references_in_their_own_bank_sit_below_their_leave_one_out_values() -> None:
    """In the full bank each reference finds itself: its max M_x, g and a are 0, below every LOO value, so its
    z is negative for those three; in a bank of one there are no LOO values to standardise against."""
    config = InCTRLv2Config(backbone="tiny", pretrained=None, fusion=FusionConfig(image="standardised", global_views=NuisanceViews(count=0)))
    detector = InCTRLv2(config)
    size = detector.backbone.image_size
    embedding, patches = detector.encode(torch.rand(4, 3, size, size, generator=torch.Generator().manual_seed(0)))
    bank = detector.bank_from_features(embedding, patches, "part")
    z = component_z(detector, embedding, patches, bank)
    assert set(z) == {"image", "text", "patch", "global", "appearance"} and all(v.shape == (4,) for v in z.values())  # tiny has a text tower
    assert all((z[name] < 0).all() for name in ("patch", "global", "appearance"))
    with pytest.raises(ValueError, match="K >= 2 references, 'part' has 1"):
        component_z(detector, embedding[:1], patches[:1], bank.subset([0]))


def test_the_cli_prints_every_source_and_component_per_category(synthetic_root: Path, standardised_checkpoint: Path) -> None:
    command = ["bench", "views", "--checkpoint", str(standardised_checkpoint), "--data", str(synthetic_root), "--shots", "3", "--seeds", "1", "--components"]
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 0, result.output
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in result.output.splitlines() if line.startswith("| ")]
    assert rows[0] == ["category", "source", "z image", "z text", "z patch", "z global", "z appearance"]
    assert [(row[0], row[1]) for row in rows[1:]] == [(c, s) for c in ("brick", "capsule") for s in SOURCES]
    for row in rows[1:]:
        for cell in row[2:]:
            mean, p95 = (float(v) for v in cell.split(" / "))
            assert np.isfinite(mean) and np.isfinite(p95)
