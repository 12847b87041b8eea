"""Training configuration: one YAML or JSON file, validated into a `TrainConfig` with readable errors."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from model import InCTRLv2Config


class TrainConfigError(ValueError):
    """A training config file that is missing, unparsable or invalid; the message lists every problem."""


class TrainData(BaseModel):
    """Where the labelled (DASL) and normal (OASL) training images come from.

    DASL trains on images of `dasl_split` (anomalous ones need masks: e.g. the MVTec AD test split);
    OASL on the normal images of `oasl_split` (e.g. the train split). Prompts are normal images of
    `prompt_split` of the query's category, never the query itself.
    """

    model_config = ConfigDict(extra="forbid")

    dataset: str = Field("mvtec", description="Dataset reader name (pipelines.datasets.DATASET_READERS).")
    root: Path = Field(description="Dataset root folder in the reader's published layout.")
    categories: list[str] | None = Field(None, description="Categories to train on; None = every category.")
    dasl_split: Literal["train", "valid", "test"] = "test"
    oasl_split: Literal["train", "valid", "test"] = "train"
    prompt_split: Literal["train", "valid", "test"] = "train"


class TrainConfig(BaseModel):
    """Everything one `inctrl train` run needs."""

    model_config = ConfigDict(extra="forbid")

    model: InCTRLv2Config = Field(default_factory=InCTRLv2Config)
    data: TrainData
    shots: int = Field(4, ge=1, description="K prompt images per training query.")
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(48, ge=1, description="Global batch size, split over the workers.")
    lr: float = Field(1e-3, gt=0.0, description="Adam learning rate.")
    num_workers: int = Field(1, ge=1, description="Ray Train workers.")
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0.0)
    cache_features: bool = Field(True, description="Encode every image once with the frozen backbone.")
    cache_dir: Path | None = Field(None, description="Keep cached features on disk (safetensors) here; None = memory.")
    output: str = Field(description="Local folder or s3://bucket/prefix for Ray Train runs and checkpoints.")
    run_name: str = Field("inctrl-train", pattern=r"^[A-Za-z0-9._-]+$")
    resume: bool = Field(False, description="Continue the run of the same name from its last checkpoint.")
    seed: int = 0
    log_every: int = Field(10, ge=1, description="Log the loss every N optimizer steps.")
    ray_temp_dir: Path = Field(Path(tempfile.gettempdir()) / "inctrl-ray", description="Ray's session folder.")

    @model_validator(mode="after")
    def _batch_covers_workers(self) -> TrainConfig:
        if self.batch_size < 2 * self.num_workers:
            raise ValueError(
                f"batch_size {self.batch_size} gives fewer than 2 images per worker for {self.num_workers} workers "
                "(BatchNorm in the scorer needs at least 2)"
            )
        return self


def load_train_config(path: Path | str) -> TrainConfig:
    """Read and validate a YAML (.yaml/.yml) or JSON (.json) training config."""
    path = Path(path)
    if not path.is_file():
        raise TrainConfigError(f"training config {path} does not exist")
    text = path.read_text()
    try:
        document = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise TrainConfigError(f"training config {path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}") from exc
    if not isinstance(document, dict):
        raise TrainConfigError(f"training config {path} must hold a mapping at the top, got {type(document).__name__}")
    try:
        return TrainConfig.model_validate(document)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '<root>'}: {e['msg']}" for e in exc.errors())
        raise TrainConfigError(f"training config {path} is invalid: {problems}") from exc
