"""Checkpoint round trip, and every way a checkpoint can fail to fit gives a CheckpointError naming why."""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from model import CheckpointError, InCTRLv2, PromptBank


@pytest.fixture()
def checkpoint(tiny_detector: InCTRLv2, tmp_path: Path) -> Path:
    return tiny_detector.save(tmp_path / "ckpt")


def edit_config(directory: Path, edit: Callable[[dict], None]) -> None:
    document = json.loads((directory / "config.json").read_text())
    edit(document)
    (directory / "config.json").write_text(json.dumps(document))


def test_save_load_round_trip_gives_identical_outputs(tiny_detector: InCTRLv2, checkpoint: Path, make_images) -> None:
    assert sorted(p.name for p in checkpoint.iterdir()) == ["config.json", "heads.safetensors"]
    loaded = InCTRLv2.load(checkpoint, device="cpu")
    assert loaded.config == tiny_detector.config
    assert loaded.backbone_id == tiny_detector.backbone_id
    assert not loaded.training
    bank = tiny_detector.build_prompt_bank(make_images(2, 64, seed=40), "capsule")
    images = make_images(3, 64, seed=41)
    before, after = tiny_detector.detect(images, bank), loaded.detect(images, bank)
    for name in ("scores", "maps", "image_scores", "text_scores", "patch_scores"):
        assert torch.equal(getattr(before, name), getattr(after, name)), name


def test_round_trip_of_changed_heads_restores_the_changed_weights(tiny_detector: InCTRLv2, tmp_path: Path) -> None:
    # Random heads are re-drawn on every construction, so a loader that ignored the file would fail here.
    state = {k: v + 0.5 for k, v in tiny_detector.heads.state_dict().items() if v.is_floating_point()}
    detector = InCTRLv2(tiny_detector.config, device="cpu")
    detector.heads.load_state_dict(state, strict=False)
    loaded = InCTRLv2.load(detector.save(tmp_path / "changed"), device="cpu")
    for key, value in detector.heads.state_dict().items():
        assert torch.equal(loaded.heads.state_dict()[key], value), key


def test_checkpoint_holds_no_pickle(checkpoint: Path) -> None:
    document = json.loads((checkpoint / "config.json").read_text())
    assert document["format"] == "inctrl-v2-heads/1" and document["config"]["backbone"] == "tiny"
    assert set(load_file(checkpoint / "heads.safetensors")) == set(
        InCTRLv2.load(checkpoint, device="cpu").heads.state_dict()
    )


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        (lambda d: d["config"].update(backbone="efficientnet-lite0"), "backbone differs"),
        (lambda d: d["config"].update(layers=[0, 1, 2]), "layers"),
        (lambda d: d["config"].update(layers=[0, 9]), "layers"),  # block 9 does not exist in the 4-block tiny ViT
        (lambda d: d["config"].update(backbone="no-such-model"), "no-such-model"),
        (lambda d: d["config"].update(alpha=3.0), "alpha"),
        (lambda d: d["config"].update(unknown_option=1), "unknown_option"),
        (lambda d: d.update(format="something-else/9"), "format"),
        (lambda d: d.pop("config"), "config"),
    ],
    ids=["other-backbone", "other-layers", "layers-out-of-range", "unknown-backbone", "bad-alpha", "extra-key",
         "wrong-format", "no-config"],
)
def test_edited_config_is_refused_with_a_named_reason(checkpoint: Path, edit, named: str) -> None:
    edit_config(checkpoint, edit)
    with pytest.raises(CheckpointError, match=named) as info:
        InCTRLv2.load(checkpoint, device="cpu")
    assert str(checkpoint) in str(info.value)


def test_tensor_with_wrong_shape_is_named(checkpoint: Path) -> None:
    tensors = load_file(checkpoint / "heads.safetensors")
    key = "psi.0.weight"
    tensors[key] = torch.zeros(tensors[key].shape[0] + 1, tensors[key].shape[1])
    save_file(tensors, checkpoint / "heads.safetensors")
    with pytest.raises(CheckpointError, match=rf"{key}: checkpoint \(17, 64\) vs model \(16, 64\)"):
        InCTRLv2.load(checkpoint, device="cpu")


def test_missing_and_unexpected_tensors_are_all_listed(checkpoint: Path) -> None:
    tensors = load_file(checkpoint / "heads.safetensors")
    del tensors["eta.0.bias"]
    tensors["extra.weight"] = torch.zeros(2)
    save_file(tensors, checkpoint / "heads.safetensors")
    with pytest.raises(CheckpointError, match="missing eta.0.bias; unexpected extra.weight"):
        InCTRLv2.load(checkpoint, device="cpu")


@pytest.mark.parametrize("name", ["config.json", "heads.safetensors"])
def test_missing_file_is_named(checkpoint: Path, name: str) -> None:
    (checkpoint / name).unlink()
    with pytest.raises(CheckpointError, match=f"{name} not found"):
        InCTRLv2.load(checkpoint, device="cpu")


def test_missing_directory_is_named(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="config.json not found"):
        InCTRLv2.load(tmp_path / "nowhere", device="cpu")


@pytest.mark.parametrize(
    ("name", "content", "named"),
    [
        ("heads.safetensors", b"\x00garbage, not safetensors", "cannot read heads.safetensors"),
        ("config.json", b"{not json", "not valid JSON"),
        ("config.json", b"[1, 2, 3]", "config.json"),
    ],
    ids=["garbage-weights", "garbage-config", "config-not-an-object"],
)
def test_garbage_files_are_refused(checkpoint: Path, name: str, content: bytes, named: str) -> None:
    (checkpoint / name).write_bytes(content)
    with pytest.raises(CheckpointError, match=named):
        InCTRLv2.load(checkpoint, device="cpu")


def test_truncated_weights_are_refused(checkpoint: Path) -> None:
    data = (checkpoint / "heads.safetensors").read_bytes()
    (checkpoint / "heads.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cannot read heads.safetensors"):
        InCTRLv2.load(checkpoint, device="cpu")


def test_bank_built_before_save_still_fits_after_load(tiny_detector: InCTRLv2, checkpoint: Path, make_images) -> None:
    bank = PromptBank.from_bytes(tiny_detector.build_prompt_bank(make_images(1, 64, seed=42), "x").to_bytes())
    InCTRLv2.load(checkpoint, device="cpu").detect(make_images(1, 64, seed=43), bank)
