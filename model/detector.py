"""InCTRLv2: the composed detector (backbone, prompt banks, heads, fusion) and its Python API."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Collection, Sequence, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import Backbone, WeightsResolver, create_backbone
from .bank import ExposureViews, PromptBank, PromptBankError
from .checkpoint import CheckpointError, read_config, read_heads, write_checkpoint
from .config import InCTRLv2Config
from .fusion import create_image_fusion, dasl_map, map_fusion_kind, oasl_map
from .grid_maps import GridToImage
from .heads import HeadOutputs, InCTRLv2Heads, text_score
from .nuisance import views_per_reference
from .preprocess import InvalidImageError, Preprocessor, restore_geometry, validate_images
from .prompts import orthogonal_prototypes, text_prototypes
from .residuals import prompt_prototype
from .standardisation import (
    APPEARANCE,
    COMPONENTS,
    GLOBAL,
    IMAGE,
    PATCH,
    TEXT,
    appearance,
    appearance_distance,
    bank_appearance,
    global_distance,
    held_out,
    leave_one_out_appearance_distance,
    leave_one_out_global_distance,
    leave_one_out_image_score,
    leave_one_out_patch_score,
)

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class Detection:
    """Scores and maps for a batch; maps are at the caller's image resolution."""

    scores: torch.Tensor  # s(x) (B,) in [0, 1], Eq 9
    maps: torch.Tensor  # M'(x) (B, H, W) in [0, 1], Eq 17
    image_scores: torch.Tensor  # s_i (B,)
    text_scores: torch.Tensor | None  # s_q (B,), None on image-only backbones
    patch_scores: torch.Tensor  # max M_x (B,), the training-free nearest-neighbour score


class InCTRLv2(nn.Module):
    """Few-shot anomaly detection and segmentation on a frozen backbone.

    >>> det = InCTRLv2(InCTRLv2Config(backbone="tiny", pretrained=None))
    >>> bank = det.build_prompt_bank(normals, class_name="capsule")  # normals (K, 3, H, W) in [0, 1]
    >>> out = det.detect(images, bank)  # out.scores (B,), out.maps (B, H, W)
    """

    def __init__(
        self,
        config: InCTRLv2Config | None = None,
        device: torch.device | str | None = None,
        weights_resolver: WeightsResolver | None = None,
    ):
        """`weights_resolver` fetches a URI in config.pretrained to a local file (the model reads files only)."""
        super().__init__()
        self.config = config or InCTRLv2Config()
        self.backbone: Backbone = create_backbone(self.config, weights_resolver)
        b = self.backbone
        with torch.random.fork_rng(devices=[]):  # heads start from the config's seed, not the global RNG
            torch.manual_seed(self.config.seed)
            self.heads = InCTRLv2Heads(b.embed_dim, b.patch_dim, len(b.layers), self.config.adapter_reduction)
        self.preprocess = Preprocessor(b.image_size, b.mean, b.std)
        self.image_fusion = create_image_fusion(self.config.fusion, self.config.alpha, b.has_text)
        self.map_fusion = map_fusion_kind(self.config.fusion, b.has_text)
        blurred = self.map_fusion == "paper" and self.config.blur
        self.to_image = GridToImage(b.grid, b.image_size, self.config.blur_sigma if blurred else None)
        self.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.eval()

    @property
    def device(self) -> torch.device:
        return next(self.heads.parameters()).device

    @property
    def backbone_id(self) -> str:
        """Identifies the features a bank holds: banks from another backbone are refused."""
        b, c = self.backbone, self.config
        pretrained = c.pretrained if c.pretrained is not None else f"random-seed{c.seed}"
        return f"{b.name}|{pretrained}|layers={','.join(map(str, b.layers))}"

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Validated (B, C, H, W) in [0, 1] -> embedding (B, E), patch tokens (B, L, N, W), float32.

        Domain-independent: the serving layer batches frames of all domains through this one call.
        """
        validate_images(images)
        x = self.preprocess(images.to(self.device, non_blocking=True))
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=x.is_cuda):
            embedding, patches = self.backbone(x)
        return embedding.float(), patches.float()

    def text_prototypes(self, class_name: str) -> torch.Tensor:
        """(2, E) F_n, F_a: the prompt ensemble, or fixed orthogonal stand-ins without a text tower."""
        if not self.backbone.has_text:
            return orthogonal_prototypes(self.backbone.embed_dim, self.config.seed).to(self.device)
        with torch.no_grad():
            return text_prototypes(class_name, self.backbone.encode_text)

    @torch.no_grad()  # not inference_mode: training backpropagates through head outputs built on banks
    def build_prompt_bank(self, normals: torch.Tensor | Sequence[torch.Tensor], class_name: str) -> PromptBank:
        """K >= 1 normal images in [0, 1] -> the domain's prompt bank, with the exposure views of them that
        the standardised fusion needs (``exposure_views``).

        ``normals`` is a (K, C, H, W) batch, or a sequence of (C, H, W) images of any sizes.
        """
        if not isinstance(normals, (torch.Tensor, list, tuple)):
            raise InvalidImageError(f"normals must be a tensor or a list of tensors, got {type(normals).__name__}")
        if len(normals) == 0:
            raise InvalidImageError("prompt set is empty: give at least one normal image (K >= 1)")
        batches = [normals] if isinstance(normals, torch.Tensor) else [image[None] for image in normals]
        encoded = [self.encode(validate_images(batch, "normals")) for batch in batches]
        views = self.exposure_views([image[None] for batch in batches for image in batch])
        return self.bank_from_features(torch.cat([e for e, _ in encoded]), torch.cat([p for _, p in encoded]), class_name, views)

    @torch.no_grad()
    def exposure_views(self, normals: Sequence[torch.Tensor]) -> ExposureViews | None:
        """f_v (V, E) and u^l (V, L, W) of exposure views of K (1, C, H, W) normals and the normal each is a view of
        (V,), for the standardisation of g and a (FusionConfig.global_views); None where nothing is standardised
        (Eq 9, K = 1)."""
        config = self.config.fusion.global_views
        if not self.image_fusion.needs_references or len(normals) < 2 or config.count == 0:
            return None
        b = self.backbone
        embeddings = torch.zeros(config.count, b.embed_dim, device=self.device)
        appearances = torch.zeros(config.count, len(b.layers), b.patch_dim, device=self.device)
        for _, indices, views in views_per_reference([validate_images(n, "normals") for n in normals], config):
            embedding, patches = self.encode(views)
            embeddings[indices.to(self.device)] = embedding
            appearances[indices.to(self.device)] = appearance(patches)
        owners = torch.tensor(config.owners(len(normals)), dtype=torch.long, device=self.device)
        return ExposureViews(embeddings, appearances, owners)

    @torch.no_grad()
    def bank_from_features(
        self,
        embeddings: torch.Tensor,
        patches: torch.Tensor,
        class_name: str,
        views: ExposureViews | None = None,
    ) -> PromptBank:
        """A bank from already-encoded prompts: embeddings (K, E), raw patch tokens (K, L, N, W) from encode(),
        and optionally their exposure views (``exposure_views``)."""
        n_layers, width = patches.shape[1], patches.shape[-1]
        references = F.normalize(patches, dim=-1).transpose(0, 1).reshape(n_layers, -1, width)  # (L, K*N, W)
        bank = PromptBank(
            class_name, self.backbone_id, embeddings, references.contiguous(), self.text_prototypes(class_name),
            view_embeddings=None if views is None else views.embeddings,
            view_owners=None if views is None else views.owners,
            view_appearance=None if views is None else views.appearance,
        )  # fmt: skip
        bank.coreset_for(self.config.nn_max_references)  # selected here, once, and stored with the bank
        return bank

    def _kept_for_heads(self, bank: PromptBank, name: str, compute: Callable[[], T]) -> T:
        """``compute()``, a query-independent value of the bank and the heads, kept in the bank while the heads'
        weights stay the same. Computed afresh when gradients may flow (training): a kept graph would be stale."""
        if self.heads.training or torch.is_grad_enabled():
            return compute()
        tensors = (*self.heads.parameters(), *self.heads.buffers())
        state = (torch.is_inference_mode_enabled(), *((id(t), t.data_ptr(), t._version) for t in tensors))
        return bank.derived(name, state, compute)

    def head_outputs(self, embedding: torch.Tensor, patches: torch.Tensor, bank: PromptBank) -> HeadOutputs:
        """Every head quantity for encoded queries of one domain."""
        if bank.backbone_id != self.backbone_id:
            raise PromptBankError(
                f"prompt bank for {bank.class_name!r} was built with {bank.backbone_id}, detector uses {self.backbone_id}"
            )
        bank = bank.on(embedding.device)
        search = bank.search(self.config.nn_backend, self.config.nn_chunk_rows, self.config.nn_max_references)
        # References are unit rows, so x.r / |x| is the cosine and the nearest reference is the same for x and
        # x / |x|: dividing the (B, L, N) maxima costs less than normalising the (B, L, N, W) queries.
        norms = torch.linalg.vector_norm(patches, dim=-1).clamp_min(1e-12)  # F.normalize's eps
        max_cosine = search.max_cosine(patches) / norms  # (B, L, N)
        prompts = bank.embeddings[None]
        prototype = self._kept_for_heads(bank, "prompt_prototype", lambda: prompt_prototype(self.heads.psi, prompts))
        return self.heads(
            embedding,
            patches,
            max_cosine,
            bank.embeddings[None],
            bank.text[None],
            self.backbone.logit_scale if self.backbone.has_text else None,
            self.config.patch_temperature,
            prototype,
        )

    @property
    def component_names(self) -> tuple[str, ...]:
        """The image-level components this detector computes (``components``)."""
        found = (IMAGE, PATCH, GLOBAL, APPEARANCE)
        return (*found, TEXT) if self.backbone.has_text else found

    def components(
        self,
        outputs: HeadOutputs,
        embedding: torch.Tensor,
        patches: torch.Tensor,
        bank: PromptBank,
        names: Collection[str] = COMPONENTS,
    ) -> dict[str, torch.Tensor]:
        """Image-level components per query, (B,) each, of those ``names`` this detector has: s_i, s_q (text tower
        only), max M_x, g, a. ``embedding`` (B, E) and raw ``patches`` (B, L, N, W) are the queries' features."""
        bank = bank.on(embedding.device)
        compute: dict[str, Callable[[], torch.Tensor]] = {
            IMAGE: lambda: outputs.image_score,
            PATCH: lambda: outputs.patch_residual.amax(dim=-1),
            GLOBAL: lambda: global_distance(embedding, bank.embeddings),
            APPEARANCE: lambda: appearance_distance(appearance(patches), self._reference_appearance(bank)),
        }
        if outputs.text_score is not None:
            compute[TEXT] = lambda: outputs.text_score
        return {name: compute[name]() for name in names if name in compute}

    @staticmethod
    def _reference_appearance(bank: PromptBank) -> torch.Tensor:
        """u^l of the bank's references (K, L, W), computed once per bank."""
        return bank.derived(APPEARANCE, None, lambda: bank_appearance(bank.patches, bank.shots))

    def reference_components(self, bank: PromptBank) -> dict[str, torch.Tensor] | None:
        """The same components of the bank's held-out references by leave-one-out, (H,) each; None when K = 1.

        Computed once per bank and state of the heads and kept in the bank: they do not depend on the queries,
        and recomputing them cost every call psi and eta on H x (K - 1) prompts (57 ms at K = 64 on the CPU).
        """
        return self._kept_for_heads(bank, "reference_components", lambda: self._reference_components(bank))

    def _reference_components(self, bank: PromptBank) -> dict[str, torch.Tensor] | None:
        loo = bank.leave_one_out()
        if loo is None:
            return None
        found = {
            IMAGE: leave_one_out_image_score(self.heads, bank.embeddings),
            PATCH: leave_one_out_patch_score(loo),
            GLOBAL: leave_one_out_global_distance(bank.embeddings, bank.view_embeddings, bank.view_owners),
            APPEARANCE: leave_one_out_appearance_distance(self._reference_appearance(bank), bank.view_appearance, bank.view_owners),
        }
        if self.backbone.has_text:
            # s_q needs no bank: a reference's own s_q is already a normal value.
            found[TEXT] = text_score(bank.embeddings, bank.text[None], self.backbone.logit_scale)[held_out(bank.shots)]
        return found

    def fuse(
        self, outputs: HeadOutputs, embedding: torch.Tensor, patches: torch.Tensor, bank: PromptBank
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Image score (Eq 9 or standardised, model/fusion.py) and map (Eq 17 + optional blur, or Phi(M_x) unblurred):
        scores (B,), maps (B, S, S) at model resolution. ``embedding`` (B, E) and raw ``patches`` (B, L, N, W) are
        the queries' features."""
        if self.map_fusion == "paper":  # Eq 17 blended on the patch grid (fusion.fused_map), then Phi and the blur
            beta = self.config.beta
            grid_maps = (1 - beta) * dasl_map(outputs) + beta * oasl_map(outputs)
        else:  # the patch residual as the baseline serves it: blurring it measured lower AUPRO (QUALITY.md)
            grid_maps = outputs.patch_residual
        maps = self.to_image(grid_maps)  # one separable linear map per axis (model/grid_maps.py)
        bank = bank.on(embedding.device)
        references = self.reference_components(bank) if self.image_fusion.needs_references else None
        components = self.components(outputs, embedding, patches, bank, self.image_fusion.components)
        scores = self.image_fusion(components, references)
        return scores.clamp(0, 1), maps.clamp(0, 1)

    @torch.inference_mode()
    def score(self, embedding: torch.Tensor, patches: torch.Tensor, bank: PromptBank, size: tuple[int, int]) -> Detection:
        """Score already-encoded images against one domain's bank; maps come back at ``size`` (H, W)."""
        outputs = self.head_outputs(embedding, patches, bank)
        scores, maps = self.fuse(outputs, embedding, patches, bank)
        return Detection(
            scores=scores,
            maps=restore_geometry(maps, *size),
            image_scores=outputs.image_score,
            text_scores=outputs.text_score,
            patch_scores=outputs.patch_residual.amax(dim=-1),
        )

    @torch.inference_mode()
    def detect(self, images: torch.Tensor, bank: PromptBank) -> Detection:
        """(B, C, H, W) in [0, 1] -> scores (B,) and maps (B, H, W) against one domain's bank."""
        embedding, patches = self.encode(images)
        return self.score(embedding, patches, bank, tuple(images.shape[-2:]))

    def save(self, directory: str | Path) -> Path:
        """Heads as safetensors + config.json; the frozen backbone is named, not stored."""
        return write_checkpoint(directory, self.config, self.backbone.describe(), self.heads.state_dict())

    @classmethod
    def load(
        cls, directory: str | Path, device: torch.device | str | None = None, weights_resolver: WeightsResolver | None = None
    ) -> InCTRLv2:
        """Rebuild the detector a checkpoint names; every head shape is checked before loading."""
        config, recorded = read_config(directory)
        try:
            detector = cls(config, device=device, weights_resolver=weights_resolver)
        except ValueError as exc:
            raise CheckpointError(f"checkpoint {directory}: cannot build the backbone it names: {exc}") from exc
        actual = detector.backbone.describe()
        differing = {k: (recorded.get(k), v) for k, v in actual.items() if k in recorded and recorded[k] != v}
        if differing:
            raise CheckpointError(f"checkpoint {directory}: backbone differs (saved, now): {differing}")
        tensors = read_heads(directory, detector.heads.state_dict())
        detector.heads.load_state_dict(tensors)
        log.info("loaded checkpoint %s (backbone %s)", directory, detector.backbone_id)
        return detector.eval()
