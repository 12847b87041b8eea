"""The quality run's training-seed table: per evaluation row, mean and std over training seeds of the
per-seed values, served detector next to patch-nn; and the textile layout keeps prompts out of the test set."""
from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.datasets import read_dataset
from pipelines.evaluation.harness import MEAN_ROW, METRIC_NAMES, EvaluationReport, SummaryRow
from pipelines.evaluation.quality import SYNTHETIC, seed_table
from pipelines.evaluation.textiles import TextileSpec, write_textile_layout


def _report(categories: list[str], auroc: dict[str, dict[str, float]]) -> EvaluationReport:
    """auroc[method][category] -> a report whose summary holds those image AUROCs (other metrics None)."""
    rows = []
    for method, per_category in auroc.items():
        for category in [*categories, MEAN_ROW]:
            value = per_category.get(category, sum(per_category.values()) / len(per_category))
            mean = {name: None for name in METRIC_NAMES} | {"image_auroc": value}
            rows.append(SummaryRow(category=category, method=method, shots=4, mean=mean, std=dict.fromkeys(METRIC_NAMES)))
    return EvaluationReport(
        dataset="x", root="x", checkpoint="c", backbone_id="b", methods=list(auroc), shots=[4], seeds=[0, 1, 2],
        categories=categories, image_size=64, notes=[], runs=[], summary=rows, seconds=0.0,
    )


def test_seed_table_gives_mean_and_std_over_training_seeds_per_row() -> None:
    results = {
        "effnet": {
            0: {SYNTHETIC: _report(["a", "b"], {"inctrlv2": {"a": 0.90, "b": 0.80}, "patch-nn": {"a": 0.7, "b": 0.7}}),
                "textiles": _report(["t"], {"inctrlv2": {"t": 0.60}, "patch-nn": {"t": 0.50}})},
            1: {SYNTHETIC: _report(["a", "b"], {"inctrlv2": {"a": 0.94, "b": 0.86}, "patch-nn": {"a": 0.7, "b": 0.7}}),
                "textiles": _report(["t"], {"inctrlv2": {"t": 0.70}, "patch-nn": {"t": 0.50}})},
        }
    }  # fmt: skip
    lines = {tuple(c.strip() for c in line.split("|")[1:4]): line for line in seed_table(results, 4).splitlines()[2:]}
    # synthetic: the MEAN_ROW per seed (0.85, 0.90) -> 87.5 ± 2.5; textiles: per category.
    assert "| 87.5 ± 2.5 |" in lines[("effnet", SYNTHETIC, "inctrlv2")]
    assert "| 70.0 ± 0.0 |" in lines[("effnet", SYNTHETIC, "patch-nn")]
    assert "| 65.0 ± 5.0 |" in lines[("effnet", "t", "inctrlv2")]
    assert lines[("effnet", "t", "inctrlv2")].count("n/a") == len(METRIC_NAMES) - 1


def test_textile_layout_keeps_references_apart_from_test_normals(tmp_path: Path) -> None:
    pytest.importorskip("conformal_clip_data")
    categories = write_textile_layout(tmp_path, TextileSpec(references=5, normals=4, defects=3))
    assert categories == ["textile-global", "textile-local"]
    samples = read_dataset("folder", tmp_path)
    for category in categories:
        mine = [s for s in samples if s.category == category]
        references = {s.image.name for s in mine if s.split == "train"}
        normals = {s.image.name for s in mine if s.split == "test" and s.label == 0}
        assert len(references) == 5 and len(normals) == 4 and not references & normals
        assert sum(s.label == 1 for s in mine) == 3
