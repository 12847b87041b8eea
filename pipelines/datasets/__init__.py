"""Readers for the paper's datasets in their published layouts, all returning `Sample` records."""

from pipelines.datasets.image_loading import load_image, load_mask
from pipelines.datasets.registry import DATASET_READERS, read_dataset
from pipelines.datasets.sample import ANOMALOUS, NORMAL, DatasetLayoutError, Sample

__all__ = [
    "ANOMALOUS",
    "DATASET_READERS",
    "NORMAL",
    "DatasetLayoutError",
    "Sample",
    "load_image",
    "load_mask",
    "read_dataset",
]
