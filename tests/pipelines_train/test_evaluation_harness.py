"""The evaluation harness on a tiny synthetic set: every cell is computed, summaries are consistent, the
files are written, and the baselines run without a checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from model import InCTRLv2, InCTRLv2Config
from pipelines.datasets import ANOMALOUS, read_dataset
from pipelines.evaluation import INCTRL, PATCH_NN, ZERO_SHOT_TEXT, EvaluationError, evaluate
from pipelines.evaluation.harness import MEAN_ROW
from pipelines.evaluation.methods import available_methods
from pipelines.train_commands import app

TINY = InCTRLv2Config(backbone="tiny", pretrained=None)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return InCTRLv2(TINY, device="cpu").save(tmp_path_factory.mktemp("checkpoint"))


def test_cli_evaluates_checkpoint_and_baselines(synthetic_root: Path, checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    args = ["evaluate", "--checkpoint", str(checkpoint), "--dataset", "mvtec", "--root", str(synthetic_root)]
    result = CliRunner().invoke(app, [*args, "--shots", "1,2", "--seeds", "2", "--out", str(out), "--image-size", "64"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "results.json").read_text())
    assert report["methods"] == [INCTRL, PATCH_NN, ZERO_SHOT_TEXT]
    cells = {(r["category"], r["method"], r["shots"], r["seed"]) for r in report["runs"]}
    assert len(cells) == len(report["runs"]) == 2 * 3 * 2 * 2  # categories x methods x K x seeds
    for run in report["runs"]:
        metrics = run["metrics"]
        assert 0.0 <= metrics["image_auroc"] <= 1.0 and 0.0 <= metrics["image_ap"] <= 1.0
        has_maps = run["method"] != ZERO_SHOT_TEXT
        assert (metrics["pixel_auroc"] is not None) == has_maps and (metrics["aupro"] is not None) == has_maps

    # The "mean" row is the average over categories, per seed, then mean and std over seeds.
    for row in report["summary"]:
        if row["category"] != MEAN_ROW or row["method"] != PATCH_NN:
            continue
        per_seed = [
            np.mean([r["metrics"]["pixel_auroc"] for r in report["runs"] if (r["method"], r["shots"], r["seed"]) == (PATCH_NN, row["shots"], s)])
            for s in (0, 1)
        ]
        assert row["mean"]["pixel_auroc"] == pytest.approx(np.mean(per_seed))
        assert row["std"]["pixel_auroc"] == pytest.approx(np.std(per_seed))

    table = (out / "results.md").read_text()
    assert "| inctrlv2 | 2 |" in table and "## capsule" in table and "## brick" in table
    for png in ("roc_K1.png", "roc_K2.png", "maps.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_prompts_are_the_same_for_every_method(synthetic_root: Path) -> None:
    """Seeds change the prompts; the trained heads do not change the patch-nn baseline on the same prompts."""
    samples = read_dataset("mvtec", synthetic_root, categories=["capsule"])
    kwargs = {"methods": [INCTRL, PATCH_NN], "shots": [1], "seeds": [0, 1], "dataset": "mvtec", "root": synthetic_root,
              "checkpoint": None, "notes": [], "image_size": 64}
    first = evaluate(InCTRLv2(TINY, device="cpu"), samples, **kwargs)
    other_heads = InCTRLv2(TINY, device="cpu")
    for parameter in other_heads.heads.parameters():
        parameter.data.normal_()
    second = evaluate(other_heads, samples, **kwargs)
    patch = {(r.seed): r.metrics for r in first.report.runs if r.method == PATCH_NN}
    assert patch == {r.seed: r.metrics for r in second.report.runs if r.method == PATCH_NN}
    assert patch[0] != patch[1]  # different seeds, different prompts
    assert first.curves[("capsule", 1, INCTRL)][1].tolist() == first.curves[("capsule", 1, PATCH_NN)][1].tolist()


def test_baselines_only_without_checkpoint(synthetic_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "baselines"
    args = ["evaluate", "--checkpoint", "none", "--backbone", "tiny", "--pretrained", "none", "--dataset", "mvtec"]
    result = CliRunner().invoke(app, [*args, "--root", str(synthetic_root), "--shots", "1", "--seeds", "1",
                                      "--categories", "brick", "--out", str(out), "--image-size", "64"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "results.json").read_text())
    assert report["methods"] == [PATCH_NN, ZERO_SHOT_TEXT] and report["categories"] == ["brick"]
    assert any("only the training-free baselines" in note for note in report["notes"])
    # The patch nearest-neighbour residual finds synthetic defects even on a random backbone.
    patch_nn = next(r for r in report["runs"] if r["method"] == PATCH_NN)["metrics"]
    assert patch_nn["pixel_auroc"] > 0.6


def test_image_only_backbone_skips_the_text_baseline() -> None:
    detector = InCTRLv2(InCTRLv2Config(backbone="efficientnet-lite0", pretrained=None), device="cpu")
    methods, notes = available_methods(detector, trained=True)
    assert methods == [INCTRL, PATCH_NN]
    assert any("no text tower" in note and "not the paper's CLIP method" in note for note in notes)


def test_category_without_anomalies_is_refused(synthetic_root: Path) -> None:
    samples = [s for s in read_dataset("mvtec", synthetic_root) if s.label != ANOMALOUS]
    with pytest.raises(EvaluationError, match="category 'brick' needs normal and anomalous test images"):
        evaluate(InCTRLv2(TINY, device="cpu"), samples, methods=[PATCH_NN], shots=[1], seeds=[0], dataset="mvtec",
                 root=synthetic_root, checkpoint=None, notes=[], image_size=64)


def test_bad_shots_option_is_named(synthetic_root: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["evaluate", "--checkpoint", "none", "--backbone", "tiny", "--pretrained", "none",
                                      "--dataset", "mvtec", "--root", str(synthetic_root), "--out", str(tmp_path), "--shots", "one"])
    assert result.exit_code == 2 and "--shots" in result.output
