"""Driver of `inctrl evaluate`: load the detector (checkpoint or bare backbone), read the data, evaluate,
write the report files."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

from model import InCTRLv2, InCTRLv2Config
from pipelines.datasets import read_dataset
from pipelines.evaluation.harness import Evaluation, evaluate
from pipelines.evaluation.methods import available_methods
from pipelines.evaluation.report import write_outputs
from pipelines.training.storage import resolve_storage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvaluationRequest:
    dataset: str
    root: Path
    out: Path
    checkpoint: str | None  # local folder or s3:// URI; None: training-free baselines only
    backbone: InCTRLv2Config | None = None  # used when checkpoint is None
    shots: tuple[int, ...] = (1, 2, 4)
    seeds: int = 3
    categories: tuple[str, ...] | None = None
    image_size: int = 256
    batch_size: int = 32
    allow_test_normals: bool = False
    device: str | None = None


def load_detector(checkpoint: str | None, backbone: InCTRLv2Config | None, device: str | None) -> InCTRLv2:
    """A trained detector from a checkpoint folder or s3:// URI, or an untrained one on `backbone`."""
    if checkpoint is None:
        if backbone is None:
            raise ValueError("without a checkpoint, a backbone config is needed to evaluate the baselines")
        return InCTRLv2(backbone, device=device)
    if checkpoint.startswith("s3://"):
        storage = resolve_storage(checkpoint)
        local = storage.download(storage.path, Path(tempfile.mkdtemp(prefix="inctrl-checkpoint-")))
        return InCTRLv2.load(local, device=device)
    return InCTRLv2.load(checkpoint, device=device)


def run_evaluation(request: EvaluationRequest) -> Evaluation:
    if request.seeds < 1 or not request.shots or min(request.shots) < 1:
        raise ValueError(f"need seeds >= 1 and shots >= 1, got seeds={request.seeds}, shots={list(request.shots)}")
    detector = load_detector(request.checkpoint, request.backbone, request.device)
    methods, notes = available_methods(detector, trained=request.checkpoint is not None)
    options = {"categories": list(request.categories)} if request.categories else {}
    samples = read_dataset(request.dataset, request.root, **options)
    evaluation = evaluate(
        detector,
        samples,
        methods=methods,
        shots=sorted(set(request.shots)),
        seeds=list(range(request.seeds)),
        dataset=request.dataset,
        root=request.root,
        checkpoint=request.checkpoint,
        notes=notes,
        image_size=request.image_size,
        batch_size=request.batch_size,
        allow_test_normals=request.allow_test_normals,
    )
    written = write_outputs(evaluation, request.out)
    log.info("evaluation written to %s (%d files)", request.out, len(written), extra={"files": [str(p) for p in written]})
    return evaluation
