"""The loop every Ray Train worker runs: DASL and OASL steps on the heads of a frozen-backbone InCTRLv2.

Gradients are averaged across workers with explicit all-reduces instead of DDP: each step runs two
forward passes (labelled batch for DASL, normal batch for OASL) into one backward, which DDP's
one-forward-one-backward contract does not allow. The adapters are disjoint, so the summed loss keeps
DASL gradients out of phi_2 and OASL gradients out of psi, eta and phi_1.
"""

from __future__ import annotations

import logging
import math
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from torch import nn

from model import InCTRLv2
from model.heads import HeadOutputs
from model.losses import dasl_loss, oasl_loss
from model.neighbours import per_sample_max_cosine
from pipelines.datasets import Sample
from pipelines.training.config import TrainConfig
from pipelines.training.dataset import TrainingDataError, TrainingSet, build_training_set, draw_prompts
from pipelines.training.features import FeatureStore
from pipelines.training.geometry import model_mask
from pipelines.training.state import restore_training_state, save_training_state

log = logging.getLogger(__name__)


class PromptedForward:
    """Head outputs for a batch of queries, each with its own K prompts drawn from its category."""

    def __init__(self, detector: InCTRLv2, store: FeatureStore, training_set: TrainingSet, shots: int):
        self.detector = detector
        self.store = store
        self.pools = training_set.prompt_pools
        self.shots = shots
        # Eq 5 prototypes once per category, never per image.
        self.texts = {c: detector.text_prototypes(c) for c in training_set.categories}

    def __call__(self, queries: list[Sample], rng: np.random.Generator) -> HeadOutputs:
        prompts = [p for q in queries for p in draw_prompts(self.pools[q.category], q, self.shots, rng)]
        embedding, patches = self.store.features(queries)
        prompt_embedding, prompt_patches = self.store.features(prompts)
        b, n_layers, n, w = patches.shape
        references = prompt_patches.reshape(b, self.shots, n_layers, n, w).transpose(1, 2).reshape(b, n_layers, -1, w)
        backbone = self.detector.backbone
        return self.detector.heads(
            embedding,
            patches,
            per_sample_max_cosine(patches, references),
            prompt_embedding.reshape(b, self.shots, -1),
            torch.stack([self.texts[q.category] for q in queries]),
            backbone.logit_scale if backbone.has_text else None,
            self.detector.config.patch_temperature,
        )


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """Keep BatchNorm statistics of a module fixed while a pass that does not train it runs."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


def epoch_order(size: int, length: int, rng: np.random.Generator) -> np.ndarray:
    """`length` indices into `size` items: shuffled passes, repeated when one pass is too short."""
    passes = [rng.permutation(size) for _ in range(math.ceil(length / size))]
    return np.concatenate(passes)[:length]


def _world() -> tuple[int, int]:
    context = ray.train.get_context()
    return context.get_world_rank(), context.get_world_size()


def _distributed(world_size: int) -> bool:
    return world_size > 1 and dist.is_available() and dist.is_initialized()


def broadcast_heads(heads: nn.Module, world_size: int) -> None:
    """Every worker starts from rank 0's initial weights."""
    if _distributed(world_size):
        for tensor in heads.state_dict().values():
            dist.broadcast(tensor, src=0)


def average_gradients(heads: nn.Module, world_size: int) -> None:
    if _distributed(world_size):
        for parameter in heads.parameters():
            if parameter.grad is not None:
                dist.all_reduce(parameter.grad)
                parameter.grad /= world_size


def average_buffers(heads: nn.Module, world_size: int) -> None:
    """BatchNorm running statistics differ per shard; the checkpoint gets their mean."""
    if _distributed(world_size):
        for buffer in heads.buffers():
            if buffer.is_floating_point():
                dist.all_reduce(buffer)
                buffer /= world_size


def global_means(sums: dict[str, float], count: int, world_size: int) -> dict[str, float]:
    values = torch.tensor([*sums.values(), float(count)], dtype=torch.float64)
    if _distributed(world_size):
        dist.all_reduce(values)
    return {name: float(v / values[-1]) for name, v in zip(sums, values[:-1])}


def train_loop_per_worker(config: dict) -> None:
    """Ray Train entry point; `config` is a TrainConfig dumped to JSON-compatible values."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    cfg = TrainConfig.model_validate(config)
    rank, world_size = _world()
    torch.set_num_threads(max(1, int(cfg.cpus_per_worker)))
    torch.manual_seed(cfg.seed)
    detector = InCTRLv2(cfg.model, device=ray.train.torch.get_device())
    broadcast_heads(detector.heads, world_size)
    training_set = build_training_set(cfg.data, cfg.shots)
    if min(len(training_set.dasl), len(training_set.oasl)) < world_size:
        raise TrainingDataError(f"{world_size} workers need at least as many DASL and OASL images each")
    local = training_set.shard(rank, world_size)
    store = FeatureStore(detector, cfg.cache_features, cfg.cache_dir)
    store.warm(local.dasl + local.oasl + [s for c in training_set.categories for s in training_set.prompt_pools[c]])
    forward = PromptedForward(detector, store, training_set, cfg.shots)
    size, grid = detector.backbone.image_size, detector.backbone.grid
    masks = {s.image: model_mask(s, size) for s in local.dasl}
    optimizer = torch.optim.Adam(detector.heads.parameters(), lr=cfg.lr)

    history: list[dict[str, float]] = []
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            history = restore_training_state(Path(directory), detector, optimizer)
        log.info("resumed after epoch %d", len(history), extra={"epochs_done": len(history)})

    worker_batch = math.ceil(cfg.batch_size / world_size)
    steps = math.ceil(max(len(training_set.dasl), len(training_set.oasl)) / cfg.batch_size)
    device = detector.device
    for epoch in range(len(history), cfg.epochs):
        rng = np.random.default_rng([cfg.seed, epoch, rank])
        dasl_order = epoch_order(len(local.dasl), steps * worker_batch, rng)
        oasl_order = epoch_order(len(local.oasl), steps * worker_batch, rng)
        sums = {"dasl_loss": 0.0, "oasl_loss": 0.0}
        detector.heads.train()
        for step in range(steps):
            window = slice(step * worker_batch, (step + 1) * worker_batch)
            labelled = [local.dasl[i] for i in dasl_order[window]]
            normals = [local.oasl[i] for i in oasl_order[window]]
            labels = torch.tensor([float(s.label) for s in labelled], device=device)
            batch_masks = torch.stack([masks[s.image] for s in labelled]).to(device)
            loss_dasl = dasl_loss(forward(labelled, rng), labels, batch_masks, grid, cfg.model.alpha)
            with eval_mode(detector.heads.eta):  # eta learns from DASL only; normal-only batches must not move its BN
                loss_oasl = oasl_loss(forward(normals, rng), grid, size)
            optimizer.zero_grad(set_to_none=True)
            (loss_dasl + loss_oasl).backward()
            average_gradients(detector.heads, world_size)
            optimizer.step()
            sums["dasl_loss"] += loss_dasl.item()
            sums["oasl_loss"] += loss_oasl.item()
            if rank == 0 and (step + 1) % cfg.log_every == 0:
                log.info(
                    "epoch=%d step=%d/%d dasl_loss=%.4f oasl_loss=%.4f",
                    epoch + 1, step + 1, steps, loss_dasl.item(), loss_oasl.item(),
                    extra={"epoch": epoch + 1, "step": step + 1, "dasl_loss": loss_dasl.item(), "oasl_loss": loss_oasl.item()},
                )
        detector.eval()
        average_buffers(detector.heads, world_size)
        metrics = global_means(sums, steps, world_size)
        metrics |= {"epoch": epoch + 1, "loss": metrics["dasl_loss"] + metrics["oasl_loss"]}
        history.append(metrics)
        if rank == 0:
            log.info("epoch=%d/%d loss=%.4f dasl_loss=%.4f oasl_loss=%.4f", epoch + 1, cfg.epochs, metrics["loss"],
                     metrics["dasl_loss"], metrics["oasl_loss"], extra=metrics)
        with tempfile.TemporaryDirectory() as directory:
            saved = None
            if rank == 0:
                save_training_state(Path(directory), detector, optimizer, history)
                saved = ray.train.Checkpoint.from_directory(directory)
            ray.train.report(metrics, checkpoint=saved, checkpoint_dir_name=f"checkpoint_epoch_{epoch + 1:04d}")
