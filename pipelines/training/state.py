"""Training checkpoints: the detector's own format (heads.safetensors + config.json), plus the optimizer
state and the completed epoch so that a run resumes where it stopped. Never pickle."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from model import CheckpointError, InCTRLv2
from model.checkpoint import read_heads

OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "train_state.json"


def save_training_state(
    directory: Path, detector: InCTRLv2, optimizer: torch.optim.Optimizer, history: list[dict[str, float]]
) -> None:
    """Write a checkpoint `InCTRLv2.load` reads, with what resuming needs next to it.

    `history` holds one metrics dict per completed epoch, so its length is the epoch to resume after.
    """
    detector.save(directory)
    state = optimizer.state_dict()
    tensors = {f"{index}.{name}": value for index, slots in state["state"].items() for name, value in slots.items()}
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, directory / OPTIMIZER_FILE)
    document = {"history": history, "param_groups": state["param_groups"], "model": detector.config.model_dump(mode="json")}
    (directory / STATE_FILE).write_text(json.dumps(document, indent=2))


def read_history(directory: Path) -> list[dict[str, float]]:
    """Per-epoch metrics recorded in a training checkpoint."""
    state_path = directory / STATE_FILE
    if not state_path.is_file():
        raise CheckpointError(f"checkpoint {directory}: {STATE_FILE} not found; not a training checkpoint")
    return json.loads(state_path.read_text())["history"]


def restore_training_state(
    directory: Path, detector: InCTRLv2, optimizer: torch.optim.Optimizer
) -> list[dict[str, float]]:
    """Load heads and optimizer from a training checkpoint; returns the history of completed epochs."""
    state_path = directory / STATE_FILE
    if not state_path.is_file():
        raise CheckpointError(f"checkpoint {directory}: {STATE_FILE} not found, cannot resume from it")
    document = json.loads(state_path.read_text())
    if document["model"] != detector.config.model_dump(mode="json"):
        raise CheckpointError(
            f"checkpoint {directory} was trained with model config {document['model']}, "
            f"this run uses {detector.config.model_dump(mode='json')}; start a new run instead of resuming"
        )
    detector.heads.load_state_dict(read_heads(directory, detector.heads.state_dict()))
    slots: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in load_file(directory / OPTIMIZER_FILE).items():
        index, name = key.split(".", 1)
        slots.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": slots, "param_groups": document["param_groups"]})
    return list(document["history"])
