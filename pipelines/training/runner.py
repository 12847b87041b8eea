"""Driver side of `inctrl train`: start (or join) Ray, run the TorchTrainer, return where the model is."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import ray
from ray.train import CheckpointConfig, LoggingConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from pipelines.training.config import TrainConfig
from pipelines.training.loop import train_loop_per_worker
from pipelines.training.state import read_history
from pipelines.training.storage import resolve_storage
from services.ray_cluster import start_ray

log = logging.getLogger(__name__)

SNAPSHOT_FILE = "checkpoint_manager_snapshot.json"  # Ray Train V2 writes it next to a run's checkpoints


class TrainingError(RuntimeError):
    """The training run failed or would overwrite an earlier run."""


@dataclass(frozen=True)
class TrainResult:
    checkpoint: str  # the last checkpoint: a local folder or an s3:// URI, in InCTRLv2.save format
    history: list[dict[str, float]]  # metrics of every completed epoch, resumed ones included


def run_training(cfg: TrainConfig) -> TrainResult:
    """Train the heads with Ray Train; uses a running Ray if there is one, else starts and stops its own."""
    storage = resolve_storage(cfg.output)
    run_path = storage.run_path(cfg.run_name)
    previous = storage.exists(f"{run_path}/{SNAPSHOT_FILE}")
    if previous and not cfg.resume:
        raise TrainingError(
            f"{storage.uri}/{cfg.run_name} already holds a training run; set resume: true to continue it "
            "or choose another run_name or output"
        )
    if cfg.resume and not previous:
        log.warning("resume requested but %s/%s holds no run yet; starting from scratch", storage.uri, cfg.run_name)
    own_ray = not ray.is_initialized()
    if own_ray:
        start_ray(temp_dir=cfg.ray_temp_dir, worker_logs=True)
    try:
        trainer = TorchTrainer(
            train_loop_per_worker,
            train_loop_config=cfg.model_dump(mode="json"),
            scaling_config=ScalingConfig(
                num_workers=cfg.num_workers, use_gpu=cfg.use_gpu, resources_per_worker={"CPU": cfg.cpus_per_worker}
            ),
            run_config=RunConfig(
                name=cfg.run_name,
                storage_path=storage.path,
                storage_filesystem=storage.filesystem,
                checkpoint_config=CheckpointConfig(num_to_keep=2),
                # Ray Train's own console records (worker group started, each checkpoint and report) bury the
                # epochs; WARNING unless the driver logs DEBUG (--verbose). Its log files keep everything.
                logging_config=LoggingConfig(log_level="DEBUG" if log.isEnabledFor(logging.DEBUG) else "WARNING"),
            ),
        )
        result = trainer.fit()
    except Exception as exc:  # noqa: BLE001 - Ray wraps worker errors in several types; keep the cause
        raise TrainingError(f"training run {cfg.run_name} failed: {exc}") from exc
    finally:
        if own_ray:
            ray.shutdown()
    if result.checkpoint is None:
        raise TrainingError(f"training run {cfg.run_name} finished without a checkpoint")
    relative = result.checkpoint.path.removeprefix(storage.path.rstrip("/")).lstrip("/")
    location = f"{storage.uri.rstrip('/')}/{relative}"
    with result.checkpoint.as_directory() as directory:
        history = read_history(Path(directory))
    log.info("training done checkpoint=%s", location, extra={"checkpoint": location, **history[-1]})
    return TrainResult(location, history)
