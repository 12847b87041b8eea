"""Training on a real local Ray (TorchTrainer, gloo): loss goes down, checkpoints load, runs resume."""

from __future__ import annotations

import json
import logging
import shutil
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

import pytest
import torch
from safetensors.torch import load_file

from model import InCTRLv2
from pipelines.training import TrainConfig, TrainData, TrainingDataError, TrainingError, run_training
from pipelines.training.dataset import build_training_set, draw_prompts

pytestmark = pytest.mark.integration


def _config(root: Path, output: Path, **changes: object) -> TrainConfig:
    base = {
        "model": {"backbone": "tiny", "pretrained": None},
        "data": {"dataset": "mvtec", "root": root},
        "shots": 2,
        "epochs": 4,
        "batch_size": 8,
        "lr": 0.005,
        "num_workers": 2,
        "output": str(output),
        "run_name": "tiny",
        "log_every": 1,
    }
    return TrainConfig.model_validate(base | changes)


def test_two_workers_train_checkpoint_and_resume(synthetic_root: Path, tmp_path: Path, local_ray: None) -> None:
    first = run_training(_config(synthetic_root, tmp_path))
    losses = [epoch["loss"] for epoch in first.history]
    assert len(losses) == 4
    assert losses[-1] < losses[0]

    checkpoint = Path(first.checkpoint)
    assert checkpoint.name == "checkpoint_epoch_0004" and checkpoint.parent == tmp_path / "tiny"
    detector = InCTRLv2.load(checkpoint, device="cpu")
    untrained = InCTRLv2(detector.config, device="cpu")
    saved = load_file(checkpoint / "heads.safetensors")
    assert any(not torch.equal(saved[k], v) for k, v in untrained.heads.state_dict().items())
    normals = torch.rand(2, 3, 64, 64)
    detection = detector.detect(torch.rand(3, 3, 80, 64), detector.build_prompt_bank(normals, "capsule"))
    assert detection.scores.shape == (3,) and detection.maps.shape == (3, 80, 64)

    with pytest.raises(TrainingError, match="already holds a training run"):
        run_training(_config(synthetic_root, tmp_path))

    # Resume on one worker (the number of workers may change between runs) for two more epochs.
    resumed = run_training(_config(synthetic_root, tmp_path, epochs=6, resume=True, num_workers=1))
    assert resumed.history[:4] == first.history
    assert [epoch["epoch"] for epoch in resumed.history] == [1, 2, 3, 4, 5, 6]
    assert Path(resumed.checkpoint).name == "checkpoint_epoch_0006"


@pytest.mark.slow  # a whole Ray Train run (~30 s); test_feature_store.py checks the uncached features in the default suite
def test_uncached_features_train_too(synthetic_root: Path, tmp_path: Path, local_ray: None) -> None:
    result = run_training(_config(synthetic_root, tmp_path, epochs=1, num_workers=1, cache_features=False))
    assert len(result.history) == 1 and result.history[0]["loss"] > 0


def test_prompts_never_include_the_query(synthetic_root: Path) -> None:
    training_set = build_training_set(_config(synthetic_root, synthetic_root).data.model_copy(update={"dasl_split": "test"}), shots=5)
    rng = np.random.default_rng(0)
    for query in training_set.oasl:  # OASL queries come from the prompt pool itself
        prompts = draw_prompts(training_set.prompt_pools[query.category], query, 5, rng)
        assert query.image not in {p.image for p in prompts}
        assert {p.category for p in prompts} == {query.category}


def test_too_few_prompts_is_a_clear_error(synthetic_root: Path) -> None:
    data = _config(synthetic_root, synthetic_root).data
    with pytest.raises(TrainingDataError, match="too few normal 'train' prompt images for K=6"):
        build_training_set(data, shots=6)  # 6 train normals per category: a train query leaves 5 others


def test_dasl_needs_masks(synthetic_root: Path, tmp_path: Path) -> None:
    """A folder-layout set whose defect images have no masks cannot train DASL."""
    base = tmp_path / "folder" / "capsule"
    sources = {"reference": "train/good", "good": "test/good", "defect": "test/crack"}
    for target, source in sources.items():
        (base / target).mkdir(parents=True)
        for image in sorted((synthetic_root / "capsule" / source).glob("*.png")):
            shutil.copy(image, base / target / image.name)
    data = TrainData(dataset="folder", root=tmp_path / "folder")
    with pytest.raises(TrainingDataError, match="DASL needs pixel masks; 1 anomalous images lack one"):
        build_training_set(data, shots=2)


def test_local_ray_workers_keep_the_dashboard_only_warnings_quiet() -> None:
    """Without a dashboard Ray Train's placement-group cleaner warned every few seconds of a training run;
    start_ray's worker setup hook sets its logger to ERROR in every worker, actors included. Nor does the
    driver announce the token authentication every new local Ray turns on. A fresh process: the suite's own
    Ray may have been started by another test's code."""
    probe = textwrap.dedent(
        """
        import logging, ray
        from services.ray_cluster import start_ray
        start_ray(num_cpus=1)

        @ray.remote(num_cpus=0)
        class Probe:
            def level(self, name):
                return logging.getLogger(name).getEffectiveLevel()

        print("level", ray.get(Probe.remote().level.remote("ray.train.v2._internal.execution.controller.placement_group_cleaner")))
        ray.shutdown()
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}  # Ray's default: token auth, announced
    found = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=Path(__file__).parents[2], env=env)
    assert found.returncode == 0, found.stderr[-2000:]
    assert f"level {logging.ERROR}" in found.stdout.splitlines()
    assert "Token authentication" not in found.stderr, found.stderr[-2000:]


def test_inctrl_train_shows_its_epochs_and_not_ray_trains_own_records(synthetic_root: Path, tmp_path: Path) -> None:
    """What a user sees of `inctrl train`: our epoch lines, without Ray Train's worker-group, checkpoint
    and report records (about one per epoch each). A fresh process, so that the CLI starts its own Ray."""
    config = _config(synthetic_root, tmp_path, epochs=2, num_workers=1).model_dump(mode="json")
    (tmp_path / "train.json").write_text(json.dumps(config))
    found = subprocess.run(
        [str(Path(sys.executable).with_name("inctrl")), "train", "--config", str(tmp_path / "train.json")],
        capture_output=True, text=True, timeout=300, cwd=Path(__file__).parents[2],
    )  # fmt: skip
    output = found.stdout + found.stderr
    assert found.returncode == 0, output[-3000:]
    assert "epoch=1/2" in output and "epoch=2/2" in output
    for chatter in ("Checkpoint successfully created", "Reporting training result", "Started training worker group"):
        assert chatter not in output, output[-3000:]
