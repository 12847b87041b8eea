"""TrainConfig validation: bad files fail early with messages naming the problem."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipelines.train_commands import app
from pipelines.training import TrainConfig, TrainConfigError, load_train_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_yaml_and_json_give_the_same_config(tmp_path: Path) -> None:
    document = {"data": {"root": str(tmp_path)}, "output": str(tmp_path / "out"), "epochs": 3, "model": {"backbone": "tiny", "pretrained": None}}
    from_json = load_train_config(_write(tmp_path, "c.json", json.dumps(document)))
    from_yaml = load_train_config(_write(tmp_path, "c.yaml", f"data: {{root: {tmp_path}}}\noutput: {tmp_path / 'out'}\nepochs: 3\nmodel: {{backbone: tiny, pretrained: null}}\n"))
    assert from_json == from_yaml
    assert (from_json.batch_size, from_json.lr, from_json.shots) == (48, 1e-3, 4)  # the paper's defaults


def test_invalid_values_are_all_named(tmp_path: Path) -> None:
    path = _write(tmp_path, "bad.yaml", "data: {root: /x}\noutput: /y\nepochs: 0\nlearning_rate: 0.1\nmodel: {alpha: 2}\n")
    with pytest.raises(TrainConfigError) as error:
        load_train_config(path)
    message = str(error.value)
    assert str(path) in message
    for name in ("epochs", "learning_rate", "model.alpha"):
        assert name in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [("epochs: [1\n", "not valid YAML"), ("- 1\n- 2\n", "must hold a mapping"), ("epochs: 2\n", "data: Field required")],
)
def test_unreadable_configs(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(TrainConfigError, match=expected):
        load_train_config(_write(tmp_path, "c.yaml", text))


def test_missing_file_and_too_small_batch(tmp_path: Path) -> None:
    with pytest.raises(TrainConfigError, match="does not exist"):
        load_train_config(tmp_path / "nope.yaml")
    with pytest.raises(ValueError, match="fewer than 2 images per worker"):
        TrainConfig(data={"root": tmp_path}, output=str(tmp_path), batch_size=3, num_workers=2)


def test_cli_reports_a_bad_config_without_a_traceback(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["train", "--config", str(_write(tmp_path, "c.yaml", "epochs: -1\n"))])
    assert result.exit_code == 2
    assert "epochs" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("train-*")))
def test_shipped_example_configs_validate(name: str) -> None:
    config = load_train_config(CONFIGS / name)
    assert config.epochs >= 1
