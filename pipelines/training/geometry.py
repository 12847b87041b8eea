"""Bring dataset images and masks onto the model's square input grid, exactly as the detector would."""

from __future__ import annotations

import torch

from model.preprocess import Preprocessor
from pipelines.datasets import Sample, load_image, load_mask

# Identity normalisation: only the detector's geometry (shortest side to S, centre crop) is applied here.
_UNIT = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)


def model_image(sample: Sample, size: int) -> torch.Tensor:
    """(3, S, S) in [0, 1]: the image as the backbone sees it, before mean/std."""
    return Preprocessor(size, *_UNIT)(load_image(sample)[None])[0]


def model_mask(sample: Sample, size: int) -> torch.Tensor:
    """(S, S) float {0, 1}: the mask under the same resize and crop as `model_image`."""
    mask = load_mask(sample).float()[None, None]
    return (Preprocessor(size, *_UNIT)(mask)[0, 0] > 0.5).float()
