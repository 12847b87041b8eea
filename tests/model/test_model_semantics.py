"""Real ImageNet features (EfficientNet-Lite0, image-only): the patch residual finds a pasted foreign patch.

Random-weight backbones carry no meaning; only this backbone's weights are installable offline.
"""
from __future__ import annotations

import pytest
import torch
from skimage import data

from model import InCTRLv2

TOP, LEFT, SIDE = 140, 40, 48  # the pasted square, in the 224 x 224 query


@pytest.fixture(scope="module")
def brick_and_pasted() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    brick = torch.from_numpy(data.brick()).float() / 255
    gravel = torch.from_numpy(data.gravel()).float() / 255
    prompts = torch.stack([brick[:224, :224], brick[200:424, 250:474]])[:, None]  # (2, 1, 224, 224) gray
    pasted = prompts[0].clone()
    pasted[0, TOP : TOP + SIDE, LEFT : LEFT + SIDE] = gravel[100 : 100 + SIDE, 100 : 100 + SIDE]
    return prompts, prompts[0], pasted


def test_pasted_foreign_patch_raises_the_patch_residual_where_it_is(
    effnet_detector: InCTRLv2, brick_and_pasted: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
) -> None:
    prompts, identical, pasted = brick_and_pasted
    bank = effnet_detector.build_prompt_bank(prompts, "brick")
    embedding, patches = effnet_detector.encode(torch.stack([identical, pasted]))
    out = effnet_detector.score(embedding, patches, bank, size=(224, 224))
    assert out.text_scores is None  # image-only backbone: s_q is dropped from Eq 9
    assert out.patch_scores[0].item() < 1e-4
    assert out.patch_scores[1].item() > 0.1

    with torch.no_grad():  # inference only: no autograd graph wanted
        residual = effnet_detector.head_outputs(embedding, patches, bank).patch_residual[1]
    grid_h, grid_w = effnet_detector.backbone.grid
    row, col = divmod(int(residual.argmax()), grid_w)
    cell = 224 // grid_h
    assert TOP <= (row + 0.5) * cell <= TOP + SIDE and LEFT <= (col + 0.5) * cell <= LEFT + SIDE

    map_row, map_col = divmod(int(out.maps[1].argmax()), 224)
    assert TOP - cell <= map_row <= TOP + SIDE + cell and LEFT - cell <= map_col <= LEFT + SIDE + cell
    # Far from the paste (top-right corner of the grid) the residual stays small.
    far = residual.reshape(grid_h, grid_w)[:4, 8:]
    assert far.max().item() < 0.2 * residual.max().item()
