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


def test_inputs_with_the_same_file_name_do_not_overwrite_each_other(tmp_path: Path, checkpoint: Path) -> None:
    """good/000.png and bad/000.png: two sets of outputs, each from its own input."""
    prompts = tmp_path / "prompts"
    _write_images(prompts, 3, (64, 64), seed=0)
    first = _write_images(tmp_path / "data" / "good", 1, (64, 64), seed=5)[0].rename(tmp_path / "data" / "good" / "000.png")
    second_folder = tmp_path / "data" / "bad"
    second_folder.mkdir(parents=True)
    pixels = np.full((64, 64, 3), 255, dtype=np.uint8)
    Image.fromarray(pixels).save(second_folder / "000.png")
    second = second_folder / "000.png"
    out = tmp_path / "out"
    args = ["predict", str(first), str(second), str(first), "--checkpoint", str(checkpoint), "--prompts", str(prompts)]
    result = CliRunner().invoke(app, [*args, "--class-name", "widget", "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    names = {path.name for path in out.iterdir()}
    assert {"good__000.json", "bad__000.json", "good__000-2.json"} <= names
    records = {name: json.loads((out / f"{name}.json").read_text()) for name in ("good__000", "bad__000")}
    assert records["good__000"]["image"] == str(first) and records["bad__000"]["image"] == str(second)
    assert records["good__000"]["score"] != records["bad__000"]["score"]
    for record in records.values():
        assert record["calibration"]["method"] == "leave-one-out" and record["verdict"] in ("normal", "anomalous")
        assert record["map"]["threshold"] == record["calibration"]["pixel_threshold"]


def test_output_names_keep_stems_within_one_folder(tmp_path: Path) -> None:
    from inctrl.predict import output_names

    assert output_names([tmp_path / "a.png", tmp_path / "b.png"]) == ["a", "b"]
    assert output_names([tmp_path / "x" / "a b.png", tmp_path / "y" / "z" / "a b.png"]) == ["x__a_b", "y__z__a_b"]
    assert output_names([tmp_path / "a.png", tmp_path / "a.jpg"]) == ["a", "a-2"]
