"""What a factory asks of an evaluation: TPR at 1% / 5% FPR, per-defect-kind rows, the calibrated
operating point, and the montage of the worst errors next to results.md."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from model import InCTRLv2, InCTRLv2Config
from pipelines.evaluation import INCTRL, PATCH_NN
from pipelines.metrics import tpr_at_fpr
from pipelines.train_commands import app


def test_evaluate_reports_operating_points_kinds_and_error_montage(synthetic_root: Path, tmp_path: Path) -> None:
    checkpoint = InCTRLv2(InCTRLv2Config(backbone="tiny", pretrained=None), device="cpu").save(tmp_path / "ckpt")
    out = tmp_path / "eval"
    args = ["evaluate", "--checkpoint", str(checkpoint), "--dataset", "mvtec", "--root", str(synthetic_root), "--categories", "capsule"]
    result = CliRunner().invoke(app, [*args, "--shots", "2", "--seeds", "1", "--out", str(out), "--image-size", "64"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "results.json").read_text())
    runs = {r["method"]: r["metrics"] for r in report["runs"]}
    assert runs[INCTRL]["calibrated_fpr"] is not None and runs[PATCH_NN]["calibrated_fpr"] is None
    for metrics in runs.values():
        assert 0.0 <= metrics["tpr_at_1fpr"] <= metrics["tpr_at_5fpr"] <= 1.0
    # The synthetic set spreads its 4 defects over 4 kinds: one row per kind and method.
    kinds = {(row["method"], row["kind"]) for row in report["kinds"]}
    names = {kind for _, kind in kinds}
    assert len(names) == 4 and all((INCTRL, kind) in kinds for kind in names)
    table = (out / "results.md").read_text()
    assert "TPR@1%FPR" in table and "recall (calibrated)" in table and "defect kind (K=2)" in table
    assert (out / "errors.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_tpr_at_fpr_agrees_with_a_threshold_sweep() -> None:
    rng = np.random.default_rng(0)
    scores, labels = np.concatenate([rng.normal(0, 1, 300), rng.normal(2, 1, 60)]), np.array([0] * 300 + [1] * 60)
    for fpr in (0.01, 0.05, 0.2):
        best = max(
            (scores[labels == 1] > t).mean() for t in np.unique(scores) if (scores[labels == 0] > t).mean() <= fpr
        )
        assert tpr_at_fpr(scores, labels, fpr) == best
