"""Model throughput benchmark: the bare backbone forward against the full detector."""
from __future__ import annotations

import logging
import os
import statistics
import threading
import time
from dataclasses import asdict, dataclass

import torch

from model import InCTRLv2, InCTRLv2Config
from model.coreset import layer_coresets

log = logging.getLogger(__name__)


@dataclass
class BenchRow:
    stage: str  # "backbone", "detector", or "coreset" (selection once per bank: batch = patches per layer)
    shots: int | None
    batch: int
    images_per_s: float
    ms_per_batch: float
    peak_mem_mb: float

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class PeakMemory:
    """Peak device memory on CUDA; on the CPU, the peak process RSS above the level at entry (sampled)."""

    def __init__(self, device: torch.device, interval_s: float = 0.002):
        self.device, self.interval_s = device, interval_s
        self.peak_bytes = 0

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            return self
        self._base = _rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_bytes = max(self.peak_bytes, _rss_bytes() - self._base)
            time.sleep(self.interval_s)

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device) - self._base
        else:
            self._stop.set()
            self._thread.join()


def _rss_bytes() -> int:
    """Resident set size of this process (Linux /proc; the benchmark runs on Linux hosts)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _call_seconds(fn, device: torch.device) -> float:
    """Seconds of one call; synchronises CUDA so the time is the work, not the launch."""
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def _time_interleaved(fns: list, device: torch.device, iters: int) -> list[float]:
    """Median seconds per call of each function, timed round-robin (one call of each per round), so a change
    of load on a shared machine hits every stage alike and the ratios between them hold."""
    samples: list[list[float]] = [[] for _ in fns]
    for _ in range(iters):
        for fn, times in zip(fns, samples):
            times.append(_call_seconds(fn, device))
    return [statistics.median(times) for times in samples]


def run_model_bench(
    config: InCTRLv2Config,
    batches: tuple[int, ...] = (1, 16),
    shots: tuple[int, ...] = (1, 4),
    warmup: int = 1,
    iters: int = 3,
    device: str | None = None,
) -> list[BenchRow]:
    """Images/s (median call, stages interleaved) and peak memory (over the warm-up) of det.encode (bare
    backbone) and det.detect at each K and batch size, and the time of the coreset selection of each bank
    above the search budget (it runs once, when the bank is built; the bank stores it).

    Inputs are random images already at the model resolution, so both stages skip the resize.
    """
    det = InCTRLv2(config, device=device)
    dev, size = det.device, det.backbone.image_size
    generator = torch.Generator().manual_seed(0)
    rows: list[BenchRow] = []
    for batch in batches:
        images = torch.rand(batch, 3, size, size, generator=generator).to(dev)
        runs = [("backbone", None, lambda: det.encode(images))]
        for k in shots:
            bank = det.build_prompt_bank(torch.rand(k, 3, size, size, generator=generator).to(dev), "object")
            runs.append(("detector", k, lambda bank=bank: det.detect(images, bank)))
            if batch == batches[0] and bank.coreset is not None:
                rows.append(_selection_row(bank.patches, k, config.nn_max_references))
        with torch.inference_mode():
            peaks = []
            for _, _, fn in runs:  # warm-up calls, which also give each stage's peak memory
                with PeakMemory(dev) as mem:
                    for _ in range(warmup):
                        _call_seconds(fn, dev)
                peaks.append(mem.peak_bytes / 2**20)
            medians = _time_interleaved([fn for _, _, fn in runs], dev, iters)
        for (stage, k, _), seconds, peak in zip(runs, medians, peaks):
            rows.append(BenchRow(stage, k, batch, batch / seconds, 1000 * seconds, peak))
            log.info("bench %s K=%s B=%d: %.2f img/s", stage, k, batch, batch / seconds)
    return rows


def _selection_row(patches: torch.Tensor, shots: int, budget: int) -> BenchRow:
    """The greedy k-centre selection of one bank's (L, K*N, W) patches, timed once (as the bank build runs it)."""
    start = time.perf_counter()
    layer_coresets(patches, budget)
    seconds = time.perf_counter() - start
    log.info("bench coreset K=%d: %d patches per layer -> %d in %.2f s", shots, patches.shape[1], budget, seconds)
    return BenchRow("coreset", shots, int(patches.shape[1]), shots / seconds, 1000 * seconds, 0.0)


def format_table(rows: list[BenchRow]) -> str:
    """Markdown table: the detector's rate relative to the bare backbone, and to the smallest K, per batch size."""
    selections = [r for r in rows if r.stage == "coreset"]
    rows = [r for r in rows if r.stage != "coreset"]
    backbone_rate = {r.batch: r.images_per_s for r in rows if r.stage == "backbone"}
    detectors = [r for r in rows if r.stage == "detector"]
    smallest_k = {r.batch: r for r in sorted(detectors, key=lambda r: r.shots or 0, reverse=True)}
    lines = [
        "| stage | K | batch | images/s | ms/batch | peak mem (MB) | vs backbone | vs smallest K |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = r.images_per_s / backbone_rate[r.batch]
        versus_k = f"{r.images_per_s / smallest_k[r.batch].images_per_s:.0%}" if r.stage == "detector" else "-"
        lines.append(
            f"| {r.stage} | {r.shots or '-'} | {r.batch} | {r.images_per_s:.2f} | {r.ms_per_batch:.1f} "
            f"| {r.peak_mem_mb:.0f} | {ratio:.0%} | {versus_k} |"
        )
    if selections:
        lines += ["", "| coreset selection (once per bank) | K | patches per layer | seconds |", "|---|---|---|---|"]
        lines += [f"| all layers | {r.shots} | {r.batch} | {r.ms_per_batch / 1000:.2f} |" for r in selections]
    return "\n".join(lines)
