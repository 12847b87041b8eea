"""Which images train which head: DASL queries (labelled, with masks), OASL queries (normals), prompt pools."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pipelines.datasets import ANOMALOUS, NORMAL, Sample, read_dataset
from pipelines.training.config import TrainData

log = logging.getLogger(__name__)


class TrainingDataError(ValueError):
    """The training data cannot support the requested run (missing masks, too few prompts, empty sets)."""


@dataclass(frozen=True)
class TrainingSet:
    dasl: list[Sample]  # labelled queries; anomalous ones carry masks
    oasl: list[Sample]  # normal queries
    prompt_pools: dict[str, list[Sample]]  # normal prompt candidates per category, path-sorted

    @property
    def categories(self) -> list[str]:
        return sorted(self.prompt_pools)

    def shard(self, rank: int, world_size: int) -> TrainingSet:
        """This worker's queries (every world_size-th); prompt pools stay whole."""
        return TrainingSet(self.dasl[rank::world_size], self.oasl[rank::world_size], self.prompt_pools)


def build_training_set(data: TrainData, shots: int) -> TrainingSet:
    """Read the dataset and check that every query can get `shots` prompts other than itself."""
    options = {"categories": data.categories} if data.categories is not None else {}
    samples = read_dataset(data.dataset, data.root, **options)
    dasl = [s for s in samples if s.split == data.dasl_split]
    oasl = [s for s in samples if s.split == data.oasl_split and s.label == NORMAL]
    pools: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        if s.split == data.prompt_split and s.label == NORMAL:
            pools[s.category].append(s)
    unmasked = [str(s.image) for s in dasl if s.label == ANOMALOUS and s.mask is None]
    if unmasked:
        raise TrainingDataError(f"DASL needs pixel masks; {len(unmasked)} anomalous images lack one, e.g. {unmasked[:3]}")
    if not dasl or not any(s.label == ANOMALOUS for s in dasl):
        raise TrainingDataError(f"no anomalous {data.dasl_split!r} images in {data.root} for DASL training")
    if not oasl:
        raise TrainingDataError(f"no normal {data.oasl_split!r} images in {data.root} for OASL training")
    short = {}
    for category in sorted({s.category for s in dasl + oasl}):
        pool = pools.get(category, [])
        # A query from the pool itself must still find `shots` others.
        needed = shots + int(any(q.category == category and q.split == data.prompt_split for q in dasl + oasl))
        if len(pool) < needed:
            short[category] = len(pool)
    if short:
        raise TrainingDataError(f"too few normal {data.prompt_split!r} prompt images for K={shots} (per category: {short})")
    log.info(
        "training set dasl=%d oasl=%d categories=%d",
        len(dasl),
        len(oasl),
        len(pools),
        extra={"dasl": len(dasl), "oasl": len(oasl), "categories": sorted(pools)},
    )
    return TrainingSet(dasl, oasl, {c: sorted(p, key=lambda s: str(s.image)) for c, p in pools.items()})


def draw_prompts(pool: Sequence[Sample], query: Sample, shots: int, rng: np.random.Generator) -> list[Sample]:
    """`shots` normal images of the query's category, never the query itself."""
    candidates = [s for s in pool if s.image != query.image]
    picks = rng.choice(len(candidates), size=shots, replace=False)
    return [candidates[i] for i in picks]
