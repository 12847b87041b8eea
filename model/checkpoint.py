"""Checkpoint I/O: heads in safetensors plus a JSON config naming the backbone. Never pickle."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .config import InCTRLv2Config

CHECKPOINT_FORMAT = "inctrl-v2-heads/1"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "heads.safetensors"


class CheckpointError(ValueError):
    """A checkpoint that is missing, malformed, or does not fit the model it is loaded into."""


def write_checkpoint(
    directory: str | Path, config: InCTRLv2Config, backbone: dict[str, object], heads: dict[str, torch.Tensor]
) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in heads.items()}, directory / WEIGHTS_FILE)
    document = {"format": CHECKPOINT_FORMAT, "config": config.model_dump(mode="json"), "backbone": backbone}
    (directory / CONFIG_FILE).write_text(json.dumps(document, indent=2))
    return directory


def read_config(directory: str | Path) -> tuple[InCTRLv2Config, dict[str, object]]:
    """The detector config and the backbone facts recorded at save time."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"checkpoint {directory}: {CONFIG_FILE} not found")
    try:
        document = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"checkpoint {directory}: {CONFIG_FILE} is not valid JSON ({exc})") from exc
    if not isinstance(document, dict) or document.get("format") != CHECKPOINT_FORMAT:
        found = document.get("format") if isinstance(document, dict) else type(document).__name__
        raise CheckpointError(f"checkpoint {directory}: {CONFIG_FILE} has format {found!r}, expected {CHECKPOINT_FORMAT!r}")
    try:
        config = InCTRLv2Config.model_validate(document["config"])
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {directory}: invalid config: {exc}") from exc
    return config, document.get("backbone", {})


def read_heads(directory: str | Path, expected: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Load head tensors and check every name and shape against ``expected``; list all mismatches."""
    path = Path(directory) / WEIGHTS_FILE
    if not path.is_file():
        raise CheckpointError(f"checkpoint {directory}: {WEIGHTS_FILE} not found")
    try:
        tensors = load_file(path)
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types for a corrupt file
        raise CheckpointError(f"checkpoint {directory}: cannot read {WEIGHTS_FILE}: {exc}") from exc
    problems = [f"missing {k}" for k in sorted(expected.keys() - tensors.keys())]
    problems += [f"unexpected {k}" for k in sorted(tensors.keys() - expected.keys())]
    problems += [
        f"{k}: checkpoint {tuple(tensors[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(expected.keys() & tensors.keys())
        if tensors[k].shape != expected[k].shape
    ]
    if problems:
        raise CheckpointError(f"checkpoint {directory} does not fit the model: " + "; ".join(problems))
    return tensors
