"""Writing a synthetic multi-domain factory dataset in the MVTec AD layout, deterministic by seed.

OUT/<domain>/train/good/NNN.png, OUT/<domain>/test/good/NNN.png, OUT/<domain>/test/<kind>/NNN.png,
OUT/<domain>/ground_truth/<kind>/NNN_mask.png (0/255) and OUT/meta.json. Every image draws from its own
random stream keyed by (seed, domain, split, index), so an image does not change when other domains or
counts change, and the same seed gives byte-identical files.
"""

from __future__ import annotations

import json
import logging
import time
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from pydantic import BaseModel, Field

from pipelines.synth.defects import DEFECT_KINDS, apply_defect, to_uint8
from pipelines.synth.domains import DOMAINS, Rendering

logger = logging.getLogger(__name__)

GENERATOR_VERSION = "1"
_STREAMS = {"train": 0, "test_good": 1, "test_defect": 2}


class DomainCounts(BaseModel):
    """How many images one domain got, per split and defect kind."""

    train: int
    test_good: int
    test_defect: dict[str, int]


class SynthMeta(BaseModel):
    """What meta.json records about a generated set."""

    generator_version: str = GENERATOR_VERSION
    seed: int
    size: int
    domains: list[str]
    defect_kinds: list[str]
    counts: dict[str, DomainCounts] = Field(default_factory=dict)


def image_rng(seed: int, domain: str, stream: str, index: int) -> np.random.Generator:
    """The random stream of one image."""
    return np.random.default_rng(
        np.random.SeedSequence(seed, spawn_key=(zlib.crc32(domain.encode()), _STREAMS[stream], index))
    )


def render_normal(domain: str, size: int, rng: np.random.Generator) -> Rendering:
    """A defect-free rendering of `domain`."""
    if domain not in DOMAINS:
        raise ValueError(f"unknown domain {domain!r}; known: {sorted(DOMAINS)}")
    return DOMAINS[domain](size, rng)


def defect_example(
    domain: str, kind: str, seed: int, index: int, size: int = 256
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clean 8-bit image, its defective version and the exact mask, as the generator writes them."""
    rng = image_rng(seed, domain, "test_defect", index)
    rendering = render_normal(domain, size, rng)
    defective, mask = apply_defect(rendering, kind, rng)
    return to_uint8(rendering.image), defective, mask


def _save(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format="PNG")


def _write_domain(
    out_dir: Path,
    domain: str,
    seed: int,
    size: int,
    n_train: int,
    n_test_good: int,
    kinds: Sequence[str],
    n_test_defect: int,
) -> DomainCounts:
    base = out_dir / domain
    for stream, folder, count in (
        ("train", base / "train" / "good", n_train),
        ("test_good", base / "test" / "good", n_test_good),
    ):
        for index in range(count):
            _save(
                folder / f"{index:03d}.png",
                to_uint8(render_normal(domain, size, image_rng(seed, domain, stream, index)).image),
            )
    per_kind = dict.fromkeys(kinds, 0)
    for index in range(n_test_defect):
        kind = kinds[index % len(kinds)]
        _, defective, mask = defect_example(domain, kind, seed, index, size)
        number = per_kind[kind]
        _save(base / "test" / kind / f"{number:03d}.png", defective)
        _save(base / "ground_truth" / kind / f"{number:03d}_mask.png", mask.astype(np.uint8) * 255)
        per_kind[kind] = number + 1
    return DomainCounts(train=n_train, test_good=n_test_good, test_defect=per_kind)


def generate(
    out_dir: Path | str,
    seed: int,
    domains: Sequence[str] = tuple(DOMAINS),
    n_train: int = 10,
    n_test_good: int = 5,
    n_test_defect: int = 6,
    size: int = 256,
    defect_kinds: Sequence[str] = tuple(DEFECT_KINDS),
) -> SynthMeta:
    """Write the dataset under `out_dir` and return what meta.json records."""
    unknown_domains = sorted(set(domains) - set(DOMAINS))
    unknown_kinds = sorted(set(defect_kinds) - set(DEFECT_KINDS))
    if unknown_domains or unknown_kinds or not domains or not defect_kinds:
        raise ValueError(
            f"bad synth request: unknown domains {unknown_domains} (known {sorted(DOMAINS)}), "
            f"unknown defect kinds {unknown_kinds} (known {sorted(DEFECT_KINDS)}), or an empty list"
        )
    if min(n_train, n_test_good, n_test_defect) < 0 or size < 32:
        raise ValueError(
            f"counts must be >= 0 and size >= 32, got train {n_train}, good {n_test_good}, "
            f"defect {n_test_defect}, size {size}"
        )
    out = Path(out_dir)
    started = time.perf_counter()
    meta = SynthMeta(seed=seed, size=size, domains=list(domains), defect_kinds=list(defect_kinds))
    for domain in domains:
        meta.counts[domain] = _write_domain(
            out, domain, seed, size, n_train, n_test_good, list(defect_kinds), n_test_defect
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / "meta.json").write_text(json.dumps(meta.model_dump(), indent=2, sort_keys=True) + "\n")
    logger.info(
        "synthetic set written",
        extra={"out": str(out), "domains": len(domains), "seconds": round(time.perf_counter() - started, 2)},
    )
    return meta
