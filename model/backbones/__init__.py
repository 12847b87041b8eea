"""Backbones behind one interface; ``create_backbone`` maps a config to one."""
from __future__ import annotations

import open_clip

from ..config import InCTRLv2Config
from .base import Backbone, WeightsUnavailableError, default_layers
from .efficientnet import INPUT_SIZE as EFFICIENTNET_INPUT_SIZE
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


def input_size(backbone: str) -> int:
    """S, the side images are resized and centre-cropped to, from the backbone's name alone (no weights are
    built): what a client must prepare frames at (the config's backbone names the checkpoint's)."""
    if backbone == "efficientnet-lite0":
        return EFFICIENTNET_INPUT_SIZE
    config = open_clip.get_model_config(TINY_NAME if backbone == "tiny" else backbone)
    if config is None:
        raise ValueError(f"unknown backbone {backbone!r}; see open_clip.list_models()")
    size = config["vision_cfg"]["image_size"]
    return int(size if isinstance(size, int) else size[0])


__all__ = ["Backbone", "WeightsResolver", "WeightsUnavailableError", "create_backbone", "default_layers", "input_size", "IMAGE_ONLY"]
