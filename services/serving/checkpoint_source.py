"""Load the detector a serving config names, from a local checkpoint folder or an s3:// prefix."""
from __future__ import annotations

import hashlib
import logging
import tempfile
from pathlib import Path

from minio.error import S3Error

from model import CheckpointError, InCTRLv2
from model.checkpoint import CONFIG_FILE, WEIGHTS_FILE
from services.storage.object_store import ObjectStore
from services.storage.uri import S3Uri, is_s3_uri
from services.storage.weights import S3WeightsResolver

logger = logging.getLogger(__name__)


def load_detector(
    uri: str, store: ObjectStore | None, nn_backend: str, expected_backbone: str | None = None
) -> tuple[InCTRLv2, str]:
    """Checkpoint -> (detector with `nn_backend` search, model version "<uri>@<heads sha256 prefix>")."""
    with tempfile.TemporaryDirectory(prefix="inctrl-checkpoint-") as scratch:
        folder = _materialise(uri, store, Path(scratch)) if is_s3_uri(uri) else Path(uri)
        heads = folder / WEIGHTS_FILE
        if not heads.is_file():
            raise CheckpointError(f"checkpoint {uri} has no {WEIGHTS_FILE}")
        digest = hashlib.sha256(heads.read_bytes()).hexdigest()[:12]
        detector = InCTRLv2.load(folder, weights_resolver=S3WeightsResolver(store) if store is not None else None)
    if expected_backbone is not None and detector.config.backbone != expected_backbone:
        raise CheckpointError(
            f"checkpoint {uri} uses backbone {detector.config.backbone!r}, the serving config expects {expected_backbone!r}"
        )
    # The search backend is a serving choice (FAISS indexes per domain), not a property of the trained heads.
    detector.config = detector.config.model_copy(update={"nn_backend": nn_backend})
    version = f"{uri.rstrip('/')}@{digest}"
    logger.info("detector loaded", extra={"checkpoint": uri, "model_version": version, "backbone": detector.backbone_id})
    return detector, version


def _materialise(uri: str, store: ObjectStore | None, folder: Path) -> Path:
    if store is None:
        raise CheckpointError(f"loading {uri} needs an object store")
    prefix = S3Uri.parse_prefix(uri)
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        try:
            (folder / name).write_bytes(store.get_bytes(prefix.bucket, prefix.child(name).key))
        except S3Error as error:
            raise CheckpointError(f"checkpoint {uri}: cannot read {name} ({error.code})") from error
    return folder


def upload_checkpoint(folder: Path, uri: str, store: ObjectStore) -> None:
    """Copy a local checkpoint folder (config.json + heads.safetensors) to an s3:// prefix."""
    prefix = S3Uri.parse_prefix(uri)
    store.ensure_bucket(prefix.bucket)
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        store.put_bytes(prefix.bucket, prefix.child(name).key, (folder / name).read_bytes())
