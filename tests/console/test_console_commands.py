"""`inctrl review ...` end to end through the CLI root, configured by environment as in production."""
from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from inctrl.cli import app
from pipelines.datasets.folder import read_folder
from services.index import ReviewAction
from inctrl.dev.local_stack import StackEndpoints

from .conftest import ConsoleWorld, texture

pytestmark = pytest.mark.integration


@pytest.fixture
def cli_env(console_world: ConsoleWorld, stack_endpoints: StackEndpoints, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ConsoleWorld:
    checkpoint = console_world.detector.save(tmp_path / "checkpoint")
    environment = {
        **stack_endpoints.environment(),
        "INCTRL_REGISTRY_PREFIX": console_world.registry.uri,
        "INCTRL_FRAMES_BUCKET": console_world.frames_bucket,
        "INCTRL_RESULTS_BUCKET": console_world.results_bucket,
        "INCTRL_INDEX_DATABASE_URL": console_world.index_url,
        "INCTRL_CONSOLE_LABELLED_PREFIX": console_world.settings.labelled_prefix,
        "INCTRL_CHECKPOINT_URI": str(checkpoint),
    }
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    return console_world


def test_review_commands_mark_normal_confirm_defect_and_export_a_training_folder(cli_env: ConsoleWorld, tmp_path: Path) -> None:
    world = cli_env
    world.inspect("capsule", "line-1", "odd-1", texture(600, stripes=9))
    world.inspect("capsule", "line-1", "bad-1", texture(601, stripes=13), minutes=1)
    runner = CliRunner()

    marked = runner.invoke(app, ["review", "mark-normal", "capsule", "line-1", "odd-1", "--actor", "nina", "--note", "ok"])
    assert marked.exit_code == 0, marked.output
    assert "capsule: v2 is current (K=4" in marked.output and world.registry.show("capsule").actor == "nina"
    again = runner.invoke(app, ["review", "mark-normal", "capsule", "line-1", "odd-1"])
    assert again.exit_code == 2 and "error: frame capsule/line-1/odd-1 is already a reference" in again.output
    missing = runner.invoke(app, ["review", "confirm-defect", "capsule", "line-9", "nope"])
    assert missing.exit_code == 2 and "capsule/line-9/nope is not in the inspection index" in missing.output

    defect = runner.invoke(app, ["review", "confirm-defect", "capsule", "line-1", "bad-1", "--note", "wrong pattern"])
    assert defect.exit_code == 0, defect.output
    assert "/capsule/defect/line-1--bad-1.png with mask " in defect.output
    [review] = world.index.reviews("capsule", "line-1", "bad-1")
    assert review.action is ReviewAction.CONFIRM_DEFECT and review.actor.startswith("cli:") and review.note == "wrong pattern"

    exported = runner.invoke(app, ["review", "export", "--out", str(tmp_path / "train")])
    assert exported.exit_code == 0, exported.output
    assert "wrote 1 good, 1 defect, 4 reference images" in exported.output
    samples = read_folder(tmp_path / "train")
    assert sorted((s.split, s.label) for s in samples) == [("test", 0), ("test", 1)] + [("train", 0)] * 4


def test_mark_normal_keeps_the_environment_s_reference_limit(cli_env: ConsoleWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    world = cli_env
    world.inspect("capsule", "line-1", "odd-1", texture(610, stripes=9))
    shots = world.registry.show("capsule").shots
    monkeypatch.setenv("INCTRL_MAX_REFERENCES", str(shots))
    refused = CliRunner().invoke(app, ["review", "mark-normal", "capsule", "line-1", "odd-1"])
    assert refused.exit_code == 2, refused.output
    assert f"'capsule': {shots + 1} reference images, above the limit of {shots}" in refused.output
    assert world.registry.current_version("capsule") == 1 and world.index.reviews("capsule", "line-1", "odd-1") == []
