"""Prompt banks survive bytes and files unchanged; corrupt or foreign bytes give a PromptBankError."""
from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save as save_tensors

from model import InCTRLv2, PromptBank, PromptBankError


@pytest.fixture(scope="module")
def bank(tiny_detector: InCTRLv2, make_images) -> PromptBank:
    return tiny_detector.build_prompt_bank(make_images(3, 64, seed=60), "metal nut")


def test_bank_shapes_and_identity(tiny_detector: InCTRLv2, bank: PromptBank) -> None:
    b = tiny_detector.backbone
    assert bank.shots == 3 and bank.class_name == "metal nut" and bank.backbone_id == tiny_detector.backbone_id
    assert bank.embeddings.shape == (3, b.embed_dim)
    assert bank.patches.shape == (len(b.layers), 3 * b.num_patches, b.patch_dim)
    torch.testing.assert_close(bank.patches.norm(dim=-1), torch.ones(bank.patches.shape[:2]))
    assert bank.text.shape == (2, b.embed_dim)
    torch.testing.assert_close(bank.text, tiny_detector.text_prototypes("metal nut"))
    assert not torch.allclose(bank.text[0], bank.text[1])


def test_bank_patches_keep_each_prompt_in_its_own_rows(tiny_detector: InCTRLv2, make_images) -> None:
    # Layer-major layout (L, K*N, W): rows k*N..(k+1)*N of a layer are prompt k's patches of that layer.
    normals = make_images(2, 64, seed=61)
    two = tiny_detector.build_prompt_bank(normals, "x")
    second = tiny_detector.build_prompt_bank(normals[1:], "x")
    n = tiny_detector.backbone.num_patches
    torch.testing.assert_close(two.patches[:, n:], second.patches, atol=1e-5, rtol=0)


def test_a_query_equal_to_a_prompt_has_zero_patch_residual(tiny_detector: InCTRLv2, bank, make_images) -> None:
    prompts = make_images(3, 64, seed=60)
    out = tiny_detector.detect(torch.cat([prompts[1:2], make_images(1, 64, seed=62)]), bank)
    assert out.patch_scores[0].item() == pytest.approx(0.0, abs=1e-5)
    assert out.patch_scores[1].item() > 1e-3


def test_bytes_round_trip(tiny_detector: InCTRLv2, bank: PromptBank, make_images) -> None:
    restored = PromptBank.from_bytes(bank.to_bytes(), source="test")
    assert (restored.class_name, restored.backbone_id, restored.shots) == (bank.class_name, bank.backbone_id, 3)
    for name in ("embeddings", "patches", "text"):
        assert torch.equal(getattr(restored, name), getattr(bank, name)), name
    images = make_images(2, 64, seed=63)
    assert torch.equal(tiny_detector.detect(images, restored).maps, tiny_detector.detect(images, bank).maps)


def test_file_round_trip(bank: PromptBank, tmp_path: Path) -> None:
    bank.save(tmp_path / "metal_nut.bank")
    restored = PromptBank.load(tmp_path / "metal_nut.bank")
    assert torch.equal(restored.patches, bank.patches) and restored.class_name == "metal nut"


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(PromptBankError, match="nope.bank does not exist"):
        PromptBank.load(tmp_path / "nope.bank")


def header_only(header: object) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw


def corrupt_cases(good: bytes) -> dict[str, tuple[bytes, str]]:
    tensors = {"embeddings": torch.zeros(1, 4), "patches": torch.zeros(1, 2, 4), "text": torch.zeros(2, 4)}
    return {
        "empty": (b"", "not a safetensors file"),
        "garbage": (b"\x07\x00\x00\x00\x00\x00\x00\x00garbage", "not a safetensors file"),
        "text": (b"this is not a bank at all", "not a safetensors file"),
        "other-safetensors": (save_tensors({"w": torch.zeros(2)}), "not a prompt bank"),
        "missing-tensor": (
            save_tensors({"embeddings": torch.zeros(1, 4)}, {"format": "inctrl-prompt-bank/1", "class_name": "x",
                                                            "backbone_id": "y"}),
            r"lacks tensors \['patches', 'text'\]",
        ),
        "truncated": (good[: len(good) - 100], "src"),
        "header-not-an-object": (header_only([1, 2]), "not a safetensors file"),
        "inconsistent-shapes": (
            save_tensors(dict(tensors, text=torch.zeros(3, 4)), {"format": "inctrl-prompt-bank/1", "class_name": "x",
                                                                 "backbone_id": "y"}),
            "text",
        ),
    }


@pytest.mark.parametrize(
    "case",
    ["empty", "garbage", "text", "other-safetensors", "missing-tensor", "truncated", "header-not-an-object",
     "inconsistent-shapes"],
)
def test_corrupt_bytes_are_refused(bank: PromptBank, case: str) -> None:
    data, named = corrupt_cases(bank.to_bytes())[case]
    with pytest.raises(PromptBankError, match=named) as info:
        PromptBank.from_bytes(data, source="src")
    assert "src" in str(info.value)
