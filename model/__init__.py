"""InCTRLv2: generalist few-shot anomaly detection and segmentation on a frozen backbone."""
from .backbones import WeightsUnavailableError
from .bank import PromptBank, PromptBankError
from .checkpoint import CheckpointError
from .config import InCTRLv2Config
from .detector import Detection, InCTRLv2
from .preprocess import InvalidImageError

__all__ = [
    "InCTRLv2",
    "InCTRLv2Config",
    "Detection",
    "PromptBank",
    "PromptBankError",
    "CheckpointError",
    "InvalidImageError",
    "WeightsUnavailableError",
]
