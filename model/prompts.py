"""Eq 5: WinCLIP prompt ensemble -> normal and abnormal text prototypes F_n, F_a."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

NORMAL_STATES = (
    "{}",
    "flawless {}",
    "perfect {}",
    "unblemished {}",
    "{} without flaw",
    "{} without defect",
    "{} without damage",
)
ABNORMAL_STATES = ("damaged {}", "{} with flaw", "{} with defect", "{} with damage")
TEMPLATES = (
    "a cropped photo of the {}.",
    "a cropped photo of a {}.",
    "a close-up photo of a {}.",
    "a close-up photo of the {}.",
    "a bright photo of a {}.",
    "a bright photo of the {}.",
    "a dark photo of the {}.",
    "a dark photo of a {}.",
    "a jpeg corrupted photo of a {}.",
    "a jpeg corrupted photo of the {}.",
    "a blurry photo of the {}.",
    "a blurry photo of a {}.",
    "a photo of a {}.",
    "a photo of the {}.",
    "a photo of a small {}.",
    "a photo of the small {}.",
    "a photo of a large {}.",
    "a photo of the large {}.",
    "a photo of the {} for visual inspection.",
    "a photo of a {} for visual inspection.",
    "a photo of the {} for anomaly detection.",
    "a photo of a {} for anomaly detection.",
)


def prompt_texts(class_name: str, states: tuple[str, ...]) -> list[str]:
    """Every template filled with every state of the class name."""
    return [template.format(state.format(class_name)) for state in states for template in TEMPLATES]


def ensemble(embeddings: torch.Tensor) -> torch.Tensor:
    """(T, E) -> (E,): normalise each, average, normalise again."""
    return F.normalize(F.normalize(embeddings.float(), dim=-1).mean(dim=0), dim=0)


def text_prototypes(class_name: str, encode_text: Callable[[list[str]], torch.Tensor]) -> torch.Tensor:
    """(2, E): rows F_n, F_a for one class name. Compute once per domain, never per image."""
    if not class_name.strip():
        raise ValueError("class_name must be a non-empty string")
    normal = ensemble(encode_text(prompt_texts(class_name, NORMAL_STATES)))
    abnormal = ensemble(encode_text(prompt_texts(class_name, ABNORMAL_STATES)))
    return torch.stack([normal, abnormal])


def orthogonal_prototypes(embed_dim: int, seed: int) -> torch.Tensor:
    """(2, E) fixed, seeded, orthonormal stand-ins for F_n, F_a on image-only backbones."""
    generator = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(embed_dim, 2, generator=generator))
    return q.T.contiguous()
