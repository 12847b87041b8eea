"""`inctrl predict` end to end on a tiny random checkpoint and synthetic images."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from inctrl.cli import app
from model import InCTRLv2, InCTRLv2Config


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("ckpt")
    InCTRLv2(InCTRLv2Config(backbone="tiny", pretrained=None), device="cpu").save(directory)
    return directory


def _write_images(folder: Path, count: int, size: tuple[int, int], seed: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        path = folder / f"img{i}.png"
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def test_predict_writes_json_map_and_overlay(tmp_path: Path, checkpoint: Path) -> None:
    prompts = tmp_path / "prompts"
    _write_images(prompts, 2, (70, 90), seed=0)
    queries = _write_images(tmp_path / "queries", 2, (50, 80), seed=1)
    out = tmp_path / "out"
    args = ["predict", *map(str, queries), "--checkpoint", str(checkpoint), "--prompts", str(prompts)]
    result = CliRunner().invoke(app, [*args, "--class-name", "widget", "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    for query in queries:
        record = json.loads((out / f"{query.stem}.json").read_text())
        assert 0.0 <= record["score"] <= 1.0 and record["shots"] == 2
        assert 0.0 <= record["map"]["mean"] <= record["map"]["max"] <= 1.0
        with Image.open(out / f"{query.stem}_map.png") as png:
            assert png.size == (80, 50) and np.asarray(png).dtype == np.uint16
            assert abs(np.asarray(png).max() / 65535 - record["map"]["max"]) < 1e-3
        with Image.open(out / f"{query.stem}_overlay.jpg") as jpg:
            assert jpg.size == (80, 50) and jpg.format == "JPEG"


def test_predict_reports_missing_checkpoint_and_empty_prompts(tmp_path: Path, checkpoint: Path) -> None:
    (tmp_path / "empty").mkdir()
    query = _write_images(tmp_path / "q", 1, (40, 40), seed=2)[0]
    runner = CliRunner()
    common = ["--class-name", "x", "--out", str(tmp_path / "o"), "--device", "cpu"]
    missing = runner.invoke(app, ["predict", str(query), "--checkpoint", str(tmp_path / "nope"), "--prompts", str(tmp_path / "empty"), *common])
    assert missing.exit_code != 0 and "config.json not found" in str(missing.exception)
    empty = runner.invoke(app, ["predict", str(query), "--checkpoint", str(checkpoint), "--prompts", str(tmp_path / "empty"), *common])
    assert empty.exit_code != 0 and "holds no images" in str(empty.exception)
