"""Reference images: read from a folder or an s3:// prefix, and kept with a version as 8-bit PNGs."""
from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from services.imaging.decoding import IMAGE_SUFFIXES, ImageDecodeError, decode_image
from services.imaging.geometry import stack_for_backbone
from services.registry.records import RegistryError
from services.storage.object_store import ObjectStore
from services.storage.uri import InvalidS3Uri, S3Uri, is_s3_uri


def registry_prefix(uri: str) -> S3Uri:
    try:
        return S3Uri.parse_prefix(uri)
    except InvalidS3Uri as error:
        raise RegistryError(f"expected an s3://bucket/prefix URI: {error}") from error


def load_reference_images(source: str, store: ObjectStore | None = None) -> list[np.ndarray]:
    """Every image in a local folder or under an s3:// prefix, sorted by name, as (3, H, W) float32 in [0, 1]."""
    if is_s3_uri(source):
        if store is None:
            raise RegistryError(f"reading {source} needs an object store")
        location = registry_prefix(source)
        bucket, prefix = location.bucket, location.key
        keys = [key for key in store.list_keys(bucket, prefix) if Path(key).suffix.lower() in IMAGE_SUFFIXES]
        named = [(f"s3://{bucket}/{key}", lambda key=key: store.get_bytes(bucket, key)) for key in keys]
    else:
        folder = Path(source)
        if not folder.is_dir():
            raise RegistryError(f"reference folder {folder} does not exist")
        files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        named = [(str(path), path.read_bytes) for path in files]
    if not named:
        raise RegistryError(f"no reference images ({', '.join(sorted(IMAGE_SUFFIXES))}) found in {source}")
    images = []
    for name, read in named:
        try:
            images.append(decode_image(read()))
        except ImageDecodeError as error:
            raise RegistryError(f"reference image {name}: {error}") from error
    return images


def encode_reference(image: np.ndarray | torch.Tensor) -> tuple[np.ndarray, bytes]:
    """A (C, H, W) or (H, W) image in [0, 1] -> (its 8-bit PNG, decoded back to (3, H, W) float32; the PNG bytes).

    The bank is built from the decoded array, so a version rebuilt from its stored PNGs has the same bank.
    """
    array = image.detach().cpu().float().numpy() if isinstance(image, torch.Tensor) else np.asarray(image, dtype=np.float32)
    if array.ndim == 2:
        array = array[None]
    if array.shape[0] == 1:
        array = np.repeat(array, 3, axis=0)
    levels = np.clip(np.round(array * 255.0), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(levels.transpose(1, 2, 0))).save(buffer, format="PNG")
    return levels.astype(np.float32) / 255.0, buffer.getvalue()


@dataclass(frozen=True)
class ReferenceImages:
    """Images of a new version: what the bank is built from and the PNG files stored with it."""

    arrays: list[np.ndarray]
    files: list[bytes]

    @classmethod
    def encode(cls, images: Sequence[np.ndarray | torch.Tensor]) -> ReferenceImages:
        pairs = [encode_reference(image) for image in images]
        return cls([array for array, _ in pairs], [png for _, png in pairs])

    @classmethod
    def checked(cls, images: Sequence[np.ndarray | torch.Tensor] | None, size: int, what: str) -> ReferenceImages | None:
        """Optional images, refused when malformed before anything is encoded; None when none are given."""
        if not images:
            return None
        stack_for_backbone(images, size, what)
        return cls.encode(images)

    def names(self) -> list[str]:
        return [f"{i:03d}.png" for i in range(len(self.files))]

    def __add__(self, other: ReferenceImages) -> ReferenceImages:
        return ReferenceImages(self.arrays + other.arrays, self.files + other.files)
