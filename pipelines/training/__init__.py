"""Training the InCTRLv2 heads on Ray Train (frozen backbone, DASL + OASL, optional feature cache)."""

from pipelines.training.config import TrainConfig, TrainConfigError, TrainData, load_train_config
from pipelines.training.dataset import TrainingDataError
from pipelines.training.runner import TrainingError, TrainResult, run_training, start_ray

__all__ = [
    "TrainConfig",
    "TrainConfigError",
    "TrainData",
    "TrainResult",
    "TrainingDataError",
    "TrainingError",
    "load_train_config",
    "run_training",
    "start_ray",
]
