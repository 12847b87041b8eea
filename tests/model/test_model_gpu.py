"""CUDA checks (opt-in: pytest -m gpu on a GPU host): bf16 autocast stays close to the float32 CPU result,
scores stay batch independent on the GPU, and the GPU copies of a bank are made once."""
from __future__ import annotations

import pytest
import torch

from model import InCTRLv2, InCTRLv2Config

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

# bf16 keeps ~3 significant digits through the backbone; scores and maps live in [0, 1].
BF16_ATOL = 2e-2


@pytest.fixture(scope="module")
def detectors() -> tuple[InCTRLv2, InCTRLv2]:
    config = InCTRLv2Config(backbone="tiny", pretrained=None)
    return InCTRLv2(config, device="cpu"), InCTRLv2(config, device="cuda")


def test_cuda_matches_cpu_within_bf16_tolerance(detectors: tuple[InCTRLv2, InCTRLv2]) -> None:
    cpu, gpu = detectors
    generator = torch.Generator().manual_seed(0)
    normals, images = torch.rand(4, 3, 72, 72, generator=generator), torch.rand(6, 3, 72, 72, generator=generator)
    expected = cpu.detect(images, cpu.build_prompt_bank(normals, "part"))
    actual = gpu.detect(images.cuda(), gpu.build_prompt_bank(normals.cuda(), "part"))
    assert torch.allclose(actual.scores.cpu(), expected.scores, atol=BF16_ATOL)
    assert torch.allclose(actual.maps.cpu(), expected.maps, atol=BF16_ATOL)


def test_cuda_scores_do_not_depend_on_the_batch(detectors: tuple[InCTRLv2, InCTRLv2]) -> None:
    _, gpu = detectors
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(8, 3, 64, 64, generator=generator).cuda()
    bank = gpu.build_prompt_bank(torch.rand(2, 3, 64, 64, generator=generator).cuda(), "part")
    batched = gpu.detect(images, bank)
    alone = gpu.detect(images[3:4], bank)
    assert torch.allclose(alone.scores, batched.scores[3:4], atol=1e-3)
    assert torch.allclose(alone.maps, batched.maps[3:4], atol=1e-3)


def test_cpu_bank_is_moved_to_the_gpu_once(detectors: tuple[InCTRLv2, InCTRLv2]) -> None:
    cpu, gpu = detectors
    bank = cpu.build_prompt_bank(torch.rand(2, 3, 64, 64), "part")
    images = torch.rand(2, 3, 64, 64).cuda()
    gpu.detect(images, bank)
    copy = bank.on(images.device)
    gpu.detect(images, bank)
    assert bank.on(images.device) is copy and copy.patches.is_cuda
