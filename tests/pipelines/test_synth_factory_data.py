"""Synthetic factory data: determinism, exact masks, layout, speed, CLI."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from pipelines.data_commands import app
from pipelines.datasets import ANOMALOUS, load_mask, read_dataset
from pipelines.synth import DEFECT_KINDS, DOMAINS, defect_example, generate, render_normal
from pipelines.synth.generator import image_rng


def file_digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_at_least_six_domains_and_all_defect_kinds() -> None:
    assert len(DOMAINS) >= 6
    assert set(DEFECT_KINDS) >= {"foreign_texture", "scratch", "crack", "stain", "missing_material", "extra_material"}


@pytest.mark.parametrize("domain", sorted(DOMAINS))
def test_mask_is_exactly_the_changed_pixels(domain: str) -> None:
    for index, kind in enumerate(DEFECT_KINDS):
        clean, defective, mask = defect_example(domain, kind, seed=11, index=index, size=96)
        assert clean.shape == defective.shape == (96, 96, 3) and mask.shape == (96, 96)
        changed = (clean != defective).any(axis=2)
        assert mask.any(), f"{domain}/{kind}: empty mask"
        np.testing.assert_array_equal(defective[~mask], clean[~mask], err_msg=f"{domain}/{kind}: change outside mask")
        assert changed[mask].all(), f"{domain}/{kind}: unchanged pixel inside mask"


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    kwargs = {"domains": ["brick", "pcb"], "n_train": 2, "n_test_good": 1, "n_test_defect": 3, "size": 64}
    generate(tmp_path / "a", seed=5, **kwargs)
    generate(tmp_path / "b", seed=5, **kwargs)
    generate(tmp_path / "c", seed=6, **kwargs)
    first = file_digests(tmp_path / "a")
    assert first == file_digests(tmp_path / "b")
    other = file_digests(tmp_path / "c")
    assert first.keys() == other.keys()
    assert first["pcb/train/good/000.png"] != other["pcb/train/good/000.png"]


def test_normal_images_vary_but_stay_in_domain() -> None:
    capsules = [render_normal("capsule", 64, image_rng(1, "capsule", "train", i)).image for i in range(2)]
    assert np.abs(capsules[0] - capsules[1]).mean() > 0.005
    bricks = render_normal("brick", 64, image_rng(1, "brick", "train", 0)).image
    assert bricks.min() >= 0.0 and bricks.max() <= 1.0


def test_generated_set_reads_as_mvtec_with_meta(tmp_path: Path) -> None:
    meta = generate(tmp_path, seed=2, domains=["washer"], n_train=3, n_test_good=2, n_test_defect=6, size=64)
    samples = read_dataset("mvtec", tmp_path)
    assert len([s for s in samples if s.split == "train"]) == 3
    defects = [s for s in samples if s.label == ANOMALOUS]
    assert sorted(s.image.parent.name for s in defects) == sorted(DEFECT_KINDS)
    for sample in defects:
        assert int(load_mask(sample).sum()) > 0
        assert Image.open(sample.image).size == (64, 64)
    written = json.loads((tmp_path / "meta.json").read_text())
    assert written["seed"] == 2 and written["domains"] == ["washer"] and written == meta.model_dump()
    assert written["counts"]["washer"]["test_defect"] == dict.fromkeys(DEFECT_KINDS, 1)


def test_six_domains_of_twenty_images_well_under_thirty_seconds(tmp_path: Path) -> None:
    started = time.perf_counter()
    generate(tmp_path, seed=0, domains=sorted(DOMAINS)[:6], n_train=10, n_test_good=4, n_test_defect=6)
    elapsed = time.perf_counter() - started
    assert len(list(tmp_path.rglob("*.png"))) == 6 * (20 + 6)
    assert elapsed < 20.0, f"generation took {elapsed:.1f} s"


def test_bad_requests_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown domains \['moon'\]"):
        generate(tmp_path, seed=0, domains=["moon"])
    with pytest.raises(ValueError, match=r"unknown defect kinds \['dent'\]"):
        generate(tmp_path, seed=0, defect_kinds=["dent"])
    with pytest.raises(ValueError, match="counts must be >= 0"):
        generate(tmp_path, seed=0, n_train=-1)


def test_synth_command_writes_the_dataset(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "synth",
            "--out",
            str(tmp_path),
            "--seed",
            "4",
            "--domains",
            "screw",
            "--n-train",
            "1",
            "--n-test-good",
            "1",
            "--n-test-defect",
            "2",
            "--size",
            "48",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "wrote 4 images of 1 domains" in result.output
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.png")) == [
        "screw/ground_truth/foreign_texture/000_mask.png",
        "screw/ground_truth/scratch/000_mask.png",
        "screw/test/foreign_texture/000.png",
        "screw/test/good/000.png",
        "screw/test/scratch/000.png",
        "screw/train/good/000.png",
    ]
    refused = CliRunner().invoke(app, ["synth", "--out", str(tmp_path), "--domains", "moon"])
    assert refused.exit_code != 0 and "unknown domains" in refused.output
