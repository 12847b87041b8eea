"""Per-domain standardisation of the image-level components, from the K references by leave-one-out.

A component c is one image-level anomaly score: s_i (Eq 2), s_q (Eq 6), max M_x (Eq 4), the global
distance g(x) = 1 - max_k cos(f_v(x), f_v(x'_k)) (training-free, like max M_x but on the pooled embedding),
or the appearance distance (training-free, on the patch tokens' first moment)

    a(x) = mean_l (1 - max_k cos(u^l(x), u^l(x'_k))),   u^l(x) = mean_n F^l_x(n) / |F^l_x(n)|,

how far the image's average local appearance (texture, contrast, tint, sharpness) at each layer lies from
the nearest reference's. A local defect moves u^l by one patch in N and leaves a(x) where it was; a global
change moves every patch the same way. On the textiles' normal frames a(x) varies far less than g(x)
(z-score std over their 200 normal test images 0.12 against 0.99, one prompt draw, training-free; an
uncommitted exploration), so it adds little noise to max M_x where the defect is local; `inctrl bench fusion`
(benchmarks/fusion.md) measures what it adds to the fused score. It is not in the default fusion (weight 0,
model/config.py): with it the calibrated threshold lost its promise on validation.
Their scales differ per product: max M_x of a normal gravel image is ~0.05, of a normal washer ~0.12.
The K references are normal images of the product, so scoring reference k against the other K - 1
(leave-one-out, LOO) gives K normal values v_c1..v_cK of every component without any extra image, and

    z_c(x) = (c(x) - mean_k v_ck) / max(std_k v_ck, floor * |mean_k v_ck|, eps)          (std: ddof 1)

puts every component on the product's own normal scale. With K <= 4 the std of K values is a poor
estimate, so it is floored at a fraction of the mean (a relative spread the components show on
training domains). LOO banks hold one shot fewer than the served bank, so LOO values run slightly high:
normal queries get z a little below 0, anomalies are judged against a slightly stricter normal.

The global distance (and the appearance distance a, from the same views) has a second source of normal
values: exposure views of the references (model/nuisance.py,
FusionConfig.global_views: 32 by default, exposure within +-15%), each scored against the references other
than its own and stored with the bank. K = 4 leave-one-out values of g come in nearest-neighbour pairs, so
they are often two distinct numbers, and the references rarely span the exposures of later frames (washer:
normal test images at z_g up to 11 against their 4 references). `inctrl bench views` (benchmarks/views.md), served image
AUROC without -> with the views (under the earlier two-sided fusion of s_i, max M_x and g), on the training domains first (fresh validation images): 94.40 -> 94.52
(an earlier run on their test images: 98.04 -> 98.05); on the unseen synthetic domains afterwards 94.99 -> 95.71
(washer 95.6 -> 97.7), the textiles' global shifts 87.4 -> 86.1, local defects 57.0 -> 57.5. In an uncommitted exploration, views that also shifted (and turned by up to 5
degrees) were worse for g, their reflected border being a seam on a texture: the textiles' global shifts 70.9.

Head-independent LOO features (the nearest-patch cosines of each reference against the others, (H, L, N))
are computed once per bank and stored with it; everything that needs the heads is derived from the bank
when scoring, so a bank still outlives retraining of the heads.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .heads import InCTRLv2Heads
from .residuals import image_residual, patch_residual

MAX_HELD_OUT = 16  # LOO over at most this many references: cost H * K * N^2 * W instead of K^2 * N^2 * W
_EPS = 1e-6

IMAGE = "image"  # s_i
TEXT = "text"  # s_q
PATCH = "patch"  # max M_x
GLOBAL = "global"  # g(x)
APPEARANCE = "appearance"  # a(x)
COMPONENTS = (IMAGE, TEXT, PATCH, GLOBAL, APPEARANCE)


def held_out(shots: int) -> torch.Tensor:
    """Indices of the references scored by leave-one-out: all K, or MAX_HELD_OUT evenly spread; (H,)."""
    if shots <= MAX_HELD_OUT:
        return torch.arange(shots)
    return torch.linspace(0, shots - 1, MAX_HELD_OUT).round().long()


def leave_one_out_max_cosine(patches: torch.Tensor, shots: int) -> torch.Tensor:
    """Bank patches (L, K*N, W), L2-normalised -> (H, L, N): each held-out reference's patches against the
    nearest patch of the OTHER references, per layer. Needs K >= 2."""
    if shots < 2:
        raise ValueError("leave-one-out needs at least 2 references")
    n_layers, rows, width = patches.shape
    per_ref = patches.reshape(n_layers, shots, rows // shots, width)
    out = []
    for k in held_out(shots).tolist():
        others = torch.cat([per_ref[:, :k], per_ref[:, k + 1 :]], dim=1).reshape(n_layers, -1, width)
        out.append(torch.bmm(per_ref[:, k], others.transpose(1, 2)).amax(dim=-1))  # (L, N)
    return torch.stack(out)


def global_distance(embedding: torch.Tensor, prompt_embeddings: torch.Tensor) -> torch.Tensor:
    """g(x) = 1 - max_k cos(f_v(x), f_v(x'_k)): embedding (B, E), prompts (K, E) -> (B,) in [0, 2]."""
    cosines = F.normalize(embedding, dim=-1) @ F.normalize(prompt_embeddings, dim=-1).T
    return 1.0 - cosines.amax(dim=-1)


def leave_one_out_global_distance(
    prompt_embeddings: torch.Tensor, view_embeddings: torch.Tensor | None = None, view_owners: torch.Tensor | None = None
) -> torch.Tensor:
    """(K, E) -> (H + V,): g of each held-out reference against the other references, then g of each exposure
    view (V, E) against the references other than its own (``view_owners`` (V,)); V = 0 without views."""
    unit = F.normalize(prompt_embeddings, dim=-1)
    cosines = unit @ unit.T
    cosines.fill_diagonal_(-float("inf"))
    found = 1.0 - cosines[held_out(len(unit)).to(unit.device)].amax(dim=-1)
    if view_embeddings is None or view_owners is None or not len(view_owners):
        return found
    view_cosines = F.normalize(view_embeddings, dim=-1) @ unit.T  # (V, K)
    view_cosines[torch.arange(len(view_owners), device=unit.device), view_owners.to(unit.device)] = -float("inf")
    return torch.cat([found, 1.0 - view_cosines.amax(dim=-1)])


def appearance(patches: torch.Tensor) -> torch.Tensor:
    """u^l = mean_n F^l(n) / |F^l(n)|: raw patch tokens (B, L, N, W) -> (B, L, W). One pass over the tokens,
    without materialising their normalised copy."""
    inverse_norms = torch.linalg.vector_norm(patches, dim=-1).clamp_min(1e-12).reciprocal()  # F.normalize's eps
    return torch.einsum("blnw,bln->blw", patches, inverse_norms) / patches.shape[2]


def bank_appearance(patches: torch.Tensor, shots: int) -> torch.Tensor:
    """u^l of the references from a bank's unit patch tokens (L, K*N, W) -> (K, L, W)."""
    n_layers, rows, width = patches.shape
    return patches.reshape(n_layers, shots, rows // shots, width).mean(dim=2).transpose(0, 1)


def appearance_distance(query: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """a(x) = mean_l (1 - max_k cos(u^l(x), u^l(x'_k))): query (B, L, W), references (K, L, W) -> (B,) in [0, 2]."""
    cosines = torch.einsum("blw,klw->blk", F.normalize(query, dim=-1), F.normalize(references, dim=-1))
    return (1.0 - cosines.amax(dim=-1)).mean(dim=-1)


def leave_one_out_appearance_distance(
    references: torch.Tensor, view_appearance: torch.Tensor | None = None, view_owners: torch.Tensor | None = None
) -> torch.Tensor:
    """(K, L, W) u^l of the references -> (H + V,): a of each held-out reference against the others, then a of
    each exposure view (V, L, W) against the references other than its own (``view_owners`` (V,))."""
    unit = F.normalize(references, dim=-1)
    cosines = torch.einsum("klw,jlw->klj", unit, unit)  # (K, L, K)
    own = torch.arange(len(unit), device=unit.device)
    cosines[own, :, own] = -float("inf")
    found = (1.0 - cosines[held_out(len(unit)).to(unit.device)].amax(dim=-1)).mean(dim=-1)
    if view_appearance is None or view_owners is None or not len(view_owners):
        return found
    view_cosines = torch.einsum("vlw,klw->vlk", F.normalize(view_appearance, dim=-1), unit)  # (V, L, K)
    view_cosines[torch.arange(len(view_owners), device=unit.device), :, view_owners.to(unit.device)] = -float("inf")
    return torch.cat([found, (1.0 - view_cosines.amax(dim=-1)).mean(dim=-1)])


def leave_one_out_image_score(heads: InCTRLv2Heads, prompt_embeddings: torch.Tensor) -> torch.Tensor:
    """(K, E) -> (H,): s_i of each held-out reference with the mean of the others as its prototype (Eq 1-2)."""
    shots = len(prompt_embeddings)
    index = held_out(shots).tolist()
    others = torch.stack([torch.cat([prompt_embeddings[:k], prompt_embeddings[k + 1 :]]) for k in index])  # (H, K-1, E)
    residual = image_residual(heads.psi, prompt_embeddings[index], others)
    return torch.sigmoid(heads.eta(residual)).squeeze(-1)


def leave_one_out_patch_score(loo_max_cosine: torch.Tensor) -> torch.Tensor:
    """(H, L, N) LOO nearest-patch cosines -> (H,) max M_x of each held-out reference (Eq 3-4)."""
    return patch_residual(loo_max_cosine).amax(dim=-1)


def standardise(values: torch.Tensor, reference: torch.Tensor, floor: float) -> torch.Tensor:
    """z = (values - mean(reference)) / max(std(reference), floor * |mean(reference)|, eps); reference (H >= 2,)."""
    mean = reference.mean()
    spread = torch.maximum(reference.std(), floor * mean.abs()).clamp_min(_EPS)
    return (values - mean) / spread
