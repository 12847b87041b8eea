"""OpenCLIP vision transformers: one forward gives the projected embedding and raw patch tokens."""
from __future__ import annotations

import logging
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import open_clip
import torch

from .base import Backbone, WeightsUnavailableError, default_layers
from .weights import WeightsResolver, resolve_weights_file

log = logging.getLogger(__name__)

TINY_NAME = "inctrl-tiny"
open_clip.add_model_config(Path(__file__).parent / "configs" / f"{TINY_NAME}.json")


class OpenCLIPBackbone(Backbone):
    """Frozen OpenCLIP ViT; patch tokens are block outputs before ln_post and proj (class token dropped)."""

    def __init__(
        self,
        model_name: str,
        pretrained: str | None,
        layers: tuple[int, ...] | None,
        seed: int,
        weights_resolver: WeightsResolver | None = None,
    ):
        super().__init__()
        with _open_clip_root_records_dropped():
            self.clip = _create_clip(model_name, pretrained, seed, weights_resolver).eval().requires_grad_(False)
            self.tokenizer = open_clip.get_tokenizer(model_name)
        visual = self.clip.visual
        if not hasattr(visual, "forward_intermediates") or not hasattr(visual, "patch_size"):
            raise ValueError(f"OpenCLIP model {model_name!r} is not a ViT with patch tokens")
        depth = len(visual.transformer.resblocks)
        self.name = model_name
        self.layers = tuple(layers) if layers is not None else default_layers(depth)
        if max(self.layers) >= depth:
            raise ValueError(f"layers {self.layers} out of range for {model_name} with {depth} blocks")
        self.image_size = int(visual.image_size[0])
        self.grid = tuple(int(g) for g in visual.grid_size)
        self.embed_dim = int(visual.output_dim)
        self.patch_dim = int(visual.transformer.width)
        self.mean = tuple(getattr(visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN)
        self.std = tuple(getattr(visual, "image_std", None) or open_clip.OPENAI_DATASET_STD)
        self.logit_scale = float(self.clip.logit_scale.exp().clamp(max=100))

    @property
    def has_text(self) -> bool:
        return True

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.clip.visual.forward_intermediates(
            images, indices=list(self.layers), output_fmt="NLC", intermediates_only=False
        )
        patches = torch.stack(out["image_intermediates"], dim=1)  # (B, L, N, W)
        return out["image_features"], patches

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(texts).to(self.clip.logit_scale.device)
        return self.clip.encode_text(tokens)


def _create_clip(model_name: str, pretrained: str | None, seed: int, weights_resolver: WeightsResolver | None) -> torch.nn.Module:
    if model_name not in open_clip.list_models():
        raise ValueError(f"unknown OpenCLIP model {model_name!r}; see open_clip.list_models()")
    if pretrained is None:
        log.info("building %s with seeded random weights (seed=%d)", model_name, seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return open_clip.create_model(model_name, pretrained=None)
    hub_tags = open_clip.list_pretrained_tags_by_model(model_name)
    source = pretrained if pretrained in hub_tags else str(resolve_weights_file(pretrained, weights_resolver))
    try:
        with _hub_offline_unless_reachable():
            return open_clip.create_model(model_name, pretrained=source)
    except Exception as exc:  # noqa: BLE001 - download/parse errors all mean "no weights"
        raise WeightsUnavailableError(
            f"cannot load OpenCLIP weights {pretrained!r} for {model_name}: {exc}. Without network access, "
            "download open_clip_pytorch_model.bin elsewhere and pass pretrained=/path/to/file or an "
            "s3:// URI (served detectors fetch it with their S3 settings), or use backbone='efficientnet-lite0'."
        ) from exc


class _FromPackage(logging.Filter):
    """Drops the records logged from the files under ``package_dir``."""

    def __init__(self, package_dir: str) -> None:
        super().__init__()
        self.package_dir = package_dir

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.pathname.startswith(self.package_dir)


@contextmanager
def _open_clip_root_records_dropped() -> Iterator[None]:
    """open_clip logs on the root logger while it builds a model and its tokenizer: INFO per step, a WARNING
    that random weights are random, and a failed download at ERROR just before it raises the same text. Our
    own record (random weights) or WeightsUnavailableError (failed load, with how to supply weights) says it
    once, so the library's records are dropped for the duration of the build."""
    drop = _FromPackage(str(Path(open_clip.__file__).parent))
    root = logging.getLogger()
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)


@contextmanager
def _hub_offline_unless_reachable(host: str = "huggingface.co", timeout_s: float = 3.0) -> Iterator[None]:
    """Without network, let the hub client answer from its cache at once instead of retrying for a minute."""
    try:
        socket.create_connection((host, 443), timeout=timeout_s).close()
        reachable = True
    except OSError:
        reachable = False
    from huggingface_hub import constants

    previous = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = previous or not reachable  # read per request by the hub client
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = previous
