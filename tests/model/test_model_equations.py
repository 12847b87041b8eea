"""Each equation of the method on small hand-made tensors; every expected value is worked out by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from model.fusion import dasl_map, fused_map, fused_score, gaussian_blur, gaussian_kernel, oasl_map, upsample
from model.heads import HeadOutputs, PatchAdapter, ResidualAdapter, text_score, text_softmax_maps
from model.losses import binary_focal_loss, dice_loss
from model.neighbours import TorchPatchSearch
from model.prompts import ABNORMAL_STATES, NORMAL_STATES, TEMPLATES, ensemble, prompt_texts, text_prototypes
from model.residuals import image_residual, patch_residual


def identity_adapter(dim: int) -> ResidualAdapter:
    """psi with reduction 1 and identity weights: ReLU(I ReLU(I x)) = x for non-negative x."""
    adapter = ResidualAdapter(dim, reduction=1)
    with torch.no_grad():
        adapter[0].weight.copy_(torch.eye(dim))
        adapter[2].weight.copy_(torch.eye(dim))
    return adapter


def head_outputs(
    s_i: list[float],
    s_q: list[float] | None,
    m_x: list[list[float]],
    s_a: list[list[float]],
    s_a_hat: list[list[float]],
) -> HeadOutputs:
    s_a_t, s_a_hat_t = torch.tensor(s_a), torch.tensor(s_a_hat)
    return HeadOutputs(
        image_score=torch.tensor(s_i),
        text_score=None if s_q is None else torch.tensor(s_q),
        patch_residual=torch.tensor(m_x),
        dasl_normal=1 - s_a_t,
        dasl_abnormal=s_a_t,
        oasl_normal=1 - s_a_hat_t,
        oasl_abnormal=s_a_hat_t,
    )


def test_image_residual_eq_1_2_with_identity_adapter() -> None:
    # f_v(x) = (3, 4) -> unit (0.6, 0.8); prompts (2, 0), (0, 5) -> units (1, 0), (0, 1), mean (0.5, 0.5).
    embedding = torch.tensor([[3.0, 4.0]])
    prompts = torch.tensor([[[2.0, 0.0], [0.0, 5.0]]])
    residual = image_residual(identity_adapter(2), embedding, prompts)
    torch.testing.assert_close(residual, torch.tensor([[0.1, 0.3]]))


def test_image_residual_broadcasts_one_prompt_set_over_the_batch() -> None:
    embedding = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    prompts = torch.tensor([[[2.0, 0.0], [0.0, 5.0]]])  # (1, K, E), shared by both queries
    residual = image_residual(identity_adapter(2), embedding, prompts)
    torch.testing.assert_close(residual, torch.tensor([[0.1, 0.3], [0.5, -0.5]]))


def test_patch_residual_eq_3_4_nearest_prompt_patch_mean_over_layers() -> None:
    # Layer 0: query (1,0) has an identical reference -> 0; query (0.6,0.8) best cos 0.8 -> 0.5*(1-0.8) = 0.1.
    # Layer 1: query (0,1) best cos 0.6 -> 0.2; query (-1,0) has an identical reference -> 0.
    queries = torch.tensor([[[[1.0, 0.0], [0.6, 0.8]], [[0.0, 1.0], [-1.0, 0.0]]]])  # (B=1, L=2, N=2, W=2)
    references = torch.tensor(
        [[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], [[0.6, -0.8], [-1.0, 0.0], [0.8, 0.6]]]
    )  # (L=2, M=3, W=2)
    max_cosine = TorchPatchSearch(references).max_cosine(queries)
    torch.testing.assert_close(max_cosine, torch.tensor([[[1.0, 0.8], [0.6, 1.0]]]))
    torch.testing.assert_close(patch_residual(max_cosine), torch.tensor([[0.1, 0.05]]))


def test_prompt_texts_count_and_content() -> None:
    normal, abnormal = prompt_texts("capsule", NORMAL_STATES), prompt_texts("capsule", ABNORMAL_STATES)
    assert len(TEMPLATES) == 22
    assert (len(normal), len(abnormal)) == (7 * 22, 4 * 22)
    assert len(set(normal)) == len(normal) and len(set(abnormal)) == len(abnormal)
    assert "a photo of the flawless capsule for visual inspection." in normal
    assert "a jpeg corrupted photo of a capsule with defect." in abnormal
    assert not set(normal) & set(abnormal)


def test_text_prototypes_eq_5_normalise_average_normalise() -> None:
    # Fake text encoder, E = 3. "of the" templates and "of a" templates are 11 each, so each half weighs 1/2.
    # Normal: (2,0,0) and (0,3,0) -> units (1,0,0), (0,1,0) -> mean (.5,.5,0) -> (1/sqrt2, 1/sqrt2, 0).
    # (Averaging before normalising would give (1, 1.5, 0) -> (0.555, 0.832, 0): a different answer.)
    # Abnormal: (0,0,4) and (1,0,1) -> units (0,0,1), (1/sqrt2,0,1/sqrt2) -> (sin 22.5 deg, 0, cos 22.5 deg).
    calls: list[list[str]] = []
    vectors = {  # (abnormal, "of the" template) -> fake text embedding
        (False, True): [2.0, 0.0, 0.0],
        (False, False): [0.0, 3.0, 0.0],
        (True, True): [0.0, 0.0, 4.0],
        (True, False): [1.0, 0.0, 1.0],
    }

    def encode_text(texts: list[str]) -> torch.Tensor:
        calls.append(list(texts))
        return torch.tensor([vectors[("damaged" in t or " with " in t, "photo of the" in t)] for t in texts])

    prototypes = text_prototypes("capsule", encode_text)
    assert [len(c) for c in calls] == [154, 88]
    assert calls[0] == prompt_texts("capsule", NORMAL_STATES) and calls[1] == prompt_texts("capsule", ABNORMAL_STATES)
    s, c = math.sin(math.pi / 8), math.cos(math.pi / 8)
    torch.testing.assert_close(prototypes, torch.tensor([[2**-0.5, 2**-0.5, 0.0], [s, 0.0, c]]))


def test_ensemble_is_unit_norm_and_scale_invariant_per_row() -> None:
    rows = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    scaled = rows * torch.tensor([[10.0], [0.1]])
    torch.testing.assert_close(ensemble(scaled), ensemble(rows))
    torch.testing.assert_close(ensemble(rows).norm(), torch.tensor(1.0))


def test_text_prototypes_reject_blank_class_name() -> None:
    with pytest.raises(ValueError, match="class_name"):
        text_prototypes("  ", lambda texts: torch.ones(len(texts), 2))


def test_text_score_eq_6() -> None:
    # f_v = (3,4) -> (0.6, 0.8); F_n = (1,0), F_a = (0,1); logit scale 10: softmax(6, 8)[a] = 1 / (1 + e^-2).
    text = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    scores = text_score(torch.tensor([[3.0, 4.0], [4.0, 3.0]]), text, logit_scale=10.0)
    torch.testing.assert_close(scores, torch.tensor([1 / (1 + math.exp(-2)), 1 / (1 + math.exp(2))]))


def test_dasl_softmax_maps_eq_7_8_identity_projection_and_temperature() -> None:
    # W = E = 4; zero-mean patches make the LayerNorm a pure rescale, which the L2 normalisation removes.
    adapter = PatchAdapter(num_layers=2, patch_dim=4, embed_dim=4)
    with torch.no_grad():
        for projection in adapter.projections:
            projection.weight.copy_(torch.eye(4))
            projection.bias.zero_()
    patches = torch.tensor(
        [[[[1.0, -1.0, 0.0, 0.0], [0.0, 0.0, 1.0, -1.0]], [[1.0, 1.0, -1.0, -1.0], [-1.0, 1.0, 0.0, 0.0]]]]
    )  # (B=1, L=2, N=2, W=4)
    text = torch.tensor([[[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]]])  # F_n = e1, F_a = e2
    temperature = 0.5
    # Layer 0: patch 0 cos (n, a) = (1/sqrt2, -1/sqrt2); patch 1 = (0, 0).
    # Layer 1: patch 0 cos = (1/2, 1/2); patch 1 = (-1/sqrt2, 1/sqrt2).
    # S_a = softmax over (cos_n, cos_a) / T, abnormal entry = sigmoid((cos_a - cos_n) / T).
    def sig(z: float) -> float:
        return 1 / (1 + math.exp(-z))

    r = 2**0.5
    expected_a = [(sig(-r / temperature) + 0.5) / 2, (0.5 + sig(r / temperature)) / 2]
    normal, abnormal = text_softmax_maps(adapter, patches, text, temperature)
    torch.testing.assert_close(abnormal, torch.tensor([expected_a]), atol=1e-5, rtol=0)
    torch.testing.assert_close(normal, 1 - abnormal)


def test_fused_score_eq_9_with_text_score() -> None:
    # s_i 0.2, s_q 0.6, max(M_x) 0.9. alpha 0.5: 0.5 * (0.2 + 0.6) / 2 + 0.5 * 0.9 = 0.2 + 0.45 = 0.65.
    outputs = head_outputs([0.2], [0.6], [[0.1, 0.9]], [[0.0, 0.0]], [[0.0, 0.0]])
    torch.testing.assert_close(fused_score(outputs, 0.5), torch.tensor([0.65]))
    torch.testing.assert_close(fused_score(outputs, 1.0), torch.tensor([0.9]))  # max(M_x) alone
    torch.testing.assert_close(fused_score(outputs, 0.0), torch.tensor([0.4]))  # (s_i + s_q) / 2 alone
    torch.testing.assert_close(fused_score(outputs, 0.25), torch.tensor([0.75 * 0.4 + 0.25 * 0.9]))


def test_fused_score_eq_9_without_text_score() -> None:
    # Image-only: s = (1 - alpha) * s_i + alpha * max(M_x) = 0.5 * 0.2 + 0.5 * 0.9 = 0.55
    outputs = head_outputs([0.2, 0.8], None, [[0.1, 0.9], [0.3, 0.0]], [[0.0, 0.0]] * 2, [[0.0, 0.0]] * 2)
    torch.testing.assert_close(fused_score(outputs, 0.5), torch.tensor([0.55, 0.55]))
    expected = torch.tensor([0.75 * 0.2 + 0.25 * 0.9, 0.75 * 0.8 + 0.25 * 0.3])
    torch.testing.assert_close(fused_score(outputs, 0.25), expected)


def test_dasl_map_eq_11_and_oasl_map_eq_16() -> None:
    outputs = head_outputs([0.0], None, [[0.2, 0.4, 0.0, 1.0]], [[0.6, 0.0, 0.2, 1.0]], [[0.0, 0.8, 0.4, 0.0]])
    torch.testing.assert_close(dasl_map(outputs), torch.tensor([[0.4, 0.2, 0.1, 1.0]]))
    torch.testing.assert_close(oasl_map(outputs), torch.tensor([[0.1, 0.6, 0.2, 0.5]]))


def test_fused_map_eq_17_beta_on_the_patch_grid() -> None:
    # Upsampling a 2x2 grid to 2x2 is the identity, so M' = (1 - beta) M_p + beta M_n exactly.
    outputs = head_outputs([0.0], None, [[0.2, 0.4, 0.0, 1.0]], [[0.6, 0.0, 0.2, 1.0]], [[0.0, 0.8, 0.4, 0.0]])
    # M_p = (0.4, 0.2, 0.1, 1.0), M_n = (0.1, 0.6, 0.2, 0.5); beta 0.75 -> (0.175, 0.5, 0.175, 0.625).
    torch.testing.assert_close(fused_map(outputs, (2, 2), 2, 0.75), torch.tensor([[[0.175, 0.5], [0.175, 0.625]]]))
    torch.testing.assert_close(fused_map(outputs, (2, 2), 2, 0.0), torch.tensor([[[0.4, 0.2], [0.1, 1.0]]]))
    torch.testing.assert_close(fused_map(outputs, (2, 2), 2, 1.0), torch.tensor([[[0.1, 0.6], [0.2, 0.5]]]))


def test_fused_map_eq_17_upsamples_like_blending_the_upsampled_maps() -> None:
    outputs = head_outputs([0.0], None, [[0.2, 0.4, 0.0, 1.0]], [[0.6, 0.0, 0.2, 1.0]], [[0.0, 0.8, 0.4, 0.0]])
    expected = 0.25 * upsample(dasl_map(outputs), (2, 2), 8) + 0.75 * upsample(oasl_map(outputs), (2, 2), 8)
    torch.testing.assert_close(fused_map(outputs, (2, 2), 8, 0.75), expected)
    # Phi: bilinear, half-pixel centres; the top-left output pixel is the top-left cell value.
    assert fused_map(outputs, (2, 2), 8, 0.75)[0, 0, 0].item() == pytest.approx(0.175)


def test_gaussian_kernel_sums_to_one_with_scipy_radius() -> None:
    for sigma in (0.5, 1.0, 4.0):
        kernel = gaussian_kernel(sigma)
        assert kernel.sum().item() == pytest.approx(1.0, abs=1e-6)
        assert kernel.numel() == 2 * int(4 * sigma + 0.5) + 1
        torch.testing.assert_close(kernel, kernel.flip(0))


def test_gaussian_blur_matches_scipy_in_the_interior() -> None:
    sigma = 2.0
    radius = int(4 * sigma + 0.5)
    maps = torch.rand(2, 40, 48, generator=torch.Generator().manual_seed(3))
    blurred = gaussian_blur(maps, sigma).numpy()
    for image, ours in zip(maps.numpy(), blurred):
        reference = gaussian_filter(image.astype(np.float64), sigma, truncate=4.0)
        inner = (slice(radius, -radius), slice(radius, -radius))
        np.testing.assert_allclose(ours[inner], reference[inner], atol=1e-5)
    assert blurred.shape == (2, 40, 48)


def test_gaussian_blur_keeps_a_constant_map_constant_everywhere() -> None:
    for shape in ((1, 64, 64), (1, 12, 12)):  # 12 < radius 16 takes the replicate-padding branch
        maps = torch.full(shape, 0.37)
        torch.testing.assert_close(gaussian_blur(maps, 4.0), maps)


def test_focal_loss_by_hand() -> None:
    # y=1, p=0.8: -(0.2^2) ln 0.8 = 0.04 * 0.223144 = 0.0089257; y=0, p=0.3: -(0.3^2) ln 0.7 = 0.0321008.
    loss = binary_focal_loss(torch.tensor([0.8, 0.3]), torch.tensor([1.0, 0.0]))
    expected = (0.04 * -math.log(0.8) + 0.09 * -math.log(0.7)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    # gamma 0 is the plain binary cross-entropy.
    bce = binary_focal_loss(torch.tensor([0.8]), torch.tensor([1.0]), gamma=0.0)
    assert bce.item() == pytest.approx(-math.log(0.8), rel=1e-5)
    # A confident right answer costs (almost) nothing, a confident wrong one a lot.
    assert binary_focal_loss(torch.tensor([1.0]), torch.tensor([1.0])).item() == pytest.approx(0.0, abs=1e-9)
    assert binary_focal_loss(torch.tensor([0.0]), torch.tensor([1.0])).item() > 10


def test_dice_loss_by_hand() -> None:
    # Image 1: inter 1, |P| + |G| = 1 + 2 -> 1 - (2 + 1) / (3 + 1) = 0.25.
    # Image 2: all-normal mask, map 0.5 everywhere: 1 - (0 + 1) / (2 + 0 + 1) = 2/3.
    probs = torch.tensor([[[1.0, 0.0], [0.0, 0.0]], [[0.5, 0.5], [0.5, 0.5]]])
    masks = torch.tensor([[[1.0, 1.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]])
    assert dice_loss(probs[:1], masks[:1]).item() == pytest.approx(0.25)
    assert dice_loss(probs[1:], masks[1:]).item() == pytest.approx(2 / 3)
    assert dice_loss(probs, masks).item() == pytest.approx((0.25 + 2 / 3) / 2)
    assert dice_loss(masks[:1], masks[:1]).item() == pytest.approx(0.0)


@pytest.mark.parametrize("patch_dim, embed_dim", [(6, 24), (24, 6)], ids=["narrow-gram-path", "wide-direct-path"])
def test_patch_adapter_cosines_equal_the_projected_cosines(patch_dim: int, embed_dim: int) -> None:
    """Both ways of computing cos(phi(F), t) in PatchAdapter.cosine_to give the textbook value."""
    torch.manual_seed(0)
    adapter = PatchAdapter(num_layers=2, patch_dim=patch_dim, embed_dim=embed_dim)
    for proj in adapter.projections:
        torch.nn.init.normal_(proj.bias)
    patches = torch.randn(3, 2, 5, patch_dim) * 4 + 1
    text = torch.nn.functional.normalize(torch.randn(3, 2, embed_dim), dim=-1)
    projected = torch.nn.functional.normalize(adapter(patches), dim=-1)  # (B, L, N, E)
    expected = torch.einsum("blne,bce->blnc", projected, text)
    assert torch.allclose(adapter.cosine_to(patches, text), expected, atol=1e-5)
