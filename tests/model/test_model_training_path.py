"""DASL and OASL train disjoint parameters (Eq 13 vs Eq 14-16), and the detector's own banks can be trained on."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from model import InCTRLv2
from model.heads import HeadOutputs, InCTRLv2Heads
from model.losses import dasl_loss, oasl_loss
from model.neighbours import per_sample_max_cosine

GRID, SIZE, EMBED, WIDTH, LAYERS, SHOTS, BATCH = (3, 3), 12, 8, 6, 2, 2, 4


def head_forward(heads: InCTRLv2Heads, seed: int) -> HeadOutputs:
    g = torch.Generator().manual_seed(seed)
    patches = torch.randn(BATCH, LAYERS, GRID[0] * GRID[1], WIDTH, generator=g)
    prompt_patches = torch.randn(BATCH, LAYERS, SHOTS * GRID[0] * GRID[1], WIDTH, generator=g)
    text = nn.functional.normalize(torch.randn(1, 2, EMBED, generator=g), dim=-1)
    return heads(
        torch.randn(BATCH, EMBED, generator=g),
        patches,
        per_sample_max_cosine(patches, prompt_patches),
        torch.randn(BATCH, SHOTS, EMBED, generator=g),
        text,
        10.0,
        0.07,
    )


def gradients(module: nn.Module) -> dict[str, float]:
    """Largest absolute gradient per parameter; a parameter the loss never reached counts as 0."""
    return {name: 0.0 if p.grad is None else p.grad.abs().max().item() for name, p in module.named_parameters()}


@pytest.fixture()
def heads() -> InCTRLv2Heads:
    torch.manual_seed(0)
    return InCTRLv2Heads(EMBED, WIDTH, LAYERS, reduction=2).train()


def test_dasl_loss_reaches_psi_eta_dasl_and_never_oasl(heads: InCTRLv2Heads) -> None:
    masks = torch.zeros(BATCH, SIZE, SIZE)
    masks[2:, 3:8, 3:8] = 1
    dasl_loss(head_forward(heads, 1), torch.tensor([0.0, 0.0, 1.0, 1.0]), masks, GRID, alpha=0.5).backward()
    assert all(v == 0.0 for v in gradients(heads.oasl).values())
    for part in (heads.psi, heads.eta, heads.dasl):
        assert max(gradients(part).values()) > 0


def test_oasl_loss_reaches_only_oasl(heads: InCTRLv2Heads) -> None:
    oasl_loss(head_forward(heads, 2), GRID, SIZE).backward()
    for part in (heads.psi, heads.eta, heads.dasl):
        assert all(v == 0.0 for v in gradients(part).values())
    assert all(v > 0 for name, v in gradients(heads.oasl).items() if "projections" in name)


def test_one_training_step_with_a_bank_from_build_prompt_bank(tiny_detector: InCTRLv2, make_images) -> None:
    """The training recipe: frozen encode, heads in train mode, DASL loss against a built prompt bank.

    A bank made under torch.inference_mode holds inference tensors, which autograd refuses to save.
    """
    detector = InCTRLv2(tiny_detector.config, device="cpu")
    images = make_images(4, 64, seed=5)
    bank = detector.build_prompt_bank(make_images(2, 64, seed=6), "capsule")
    embedding, patches = detector.encode(images)
    detector.heads.train()
    try:
        outputs = detector.head_outputs(embedding, patches, bank)
        masks = torch.zeros(4, 64, 64)
        masks[2:, 8:24, 8:24] = 1
        loss = dasl_loss(outputs, torch.tensor([0.0, 0.0, 1.0, 1.0]), masks, detector.backbone.grid, 0.5)
        loss.backward()
    finally:
        detector.eval()
    assert torch.isfinite(loss)
    assert max(gradients(detector.heads.dasl).values()) > 0
    assert all(p.grad is None for p in detector.backbone.parameters())
