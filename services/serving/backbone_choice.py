"""Which detector the demo and bench build: a named backbone, or the paper's CLIP when its weights load."""
from __future__ import annotations

import logging

from model import InCTRLv2, InCTRLv2Config, WeightsUnavailableError
from model.config import DEFAULT_BACKBONE

logger = logging.getLogger(__name__)

IMAGE_ONLY_NOTE = (
    "EfficientNet-Lite0 (ImageNet weights) is an image-only backbone: s_q is dropped and the text prototypes are fixed "
    "orthogonal stand-ins, so these numbers are not the paper's method on CLIP"
)


def backbone_config(name: str) -> InCTRLv2Config:
    """"tiny" -> random test model; "efficientnet-lite0" -> ImageNet weights; else an OpenCLIP name with its hub tag."""
    if name == "tiny":
        return InCTRLv2Config(backbone="tiny", pretrained=None)
    if name == "efficientnet-lite0":
        return InCTRLv2Config(backbone=name, pretrained="imagenet")
    return InCTRLv2Config(backbone=name)


def choose_detector(name: str | None) -> tuple[InCTRLv2, str]:
    """The named detector, or (None) ViT-B-16-plus-240 falling back to EfficientNet-Lite0; returns a note saying which."""
    if name is not None:
        detector = InCTRLv2(backbone_config(name))
        return detector, IMAGE_ONLY_NOTE if not detector.backbone.has_text else f"backbone {detector.backbone_id}"
    try:
        detector = InCTRLv2(backbone_config(DEFAULT_BACKBONE))
    except WeightsUnavailableError as error:
        logger.warning("CLIP weights unavailable, using EfficientNet-Lite0", extra={"error": str(error)})
        detector = InCTRLv2(backbone_config("efficientnet-lite0"))
        reason = str(error).split(". ")[0]
        return detector, f"{DEFAULT_BACKBONE} weights unavailable ({reason}); using EfficientNet-Lite0. {IMAGE_ONLY_NOTE}"
    return detector, f"backbone {detector.backbone_id} (the paper's CLIP)"
