"""Backbones behind one interface; ``create_backbone`` maps a config to one."""
from __future__ import annotations

from ..config import InCTRLv2Config
from .base import Backbone, WeightsUnavailableError, default_layers
from .efficientnet import EfficientNetLite0Backbone
from .openclip import TINY_NAME, OpenCLIPBackbone
from .weights import WeightsResolver

IMAGE_ONLY = {"efficientnet-lite0"}


def create_backbone(config: InCTRLv2Config, weights_resolver: WeightsResolver | None = None) -> Backbone:
    """"tiny" -> seeded random OpenCLIP; "efficientnet-lite0" -> image-only; else an OpenCLIP name.
    `weights_resolver` turns a URI in config.pretrained into a local file (model/backbones/weights.py)."""
    if config.backbone == "efficientnet-lite0":
        return EfficientNetLite0Backbone(config.pretrained, config.layers, config.seed, weights_resolver)
    if config.backbone == "tiny":
        if config.pretrained is not None:
            raise ValueError('backbone "tiny" is random by design; use pretrained=None')
        return OpenCLIPBackbone(TINY_NAME, None, config.layers, config.seed)
    return OpenCLIPBackbone(config.backbone, config.pretrained, config.layers, config.seed, weights_resolver)


__all__ = ["Backbone", "WeightsResolver", "WeightsUnavailableError", "create_backbone", "default_layers", "IMAGE_ONLY"]
