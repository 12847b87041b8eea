"""Benchmark of the inspection index: write, replay and query speed on a SQLite file or a PostgreSQL URL.

    .venv/bin/python -m inctrl.dev.index_bench --database-url sqlite:///.bench/index.sqlite3 --events 20000
    .venv/bin/python -m inctrl.dev.index_bench --database-url postgresql+psycopg://postgres@127.0.0.1:5432/bench

Writes `events` synthetic results over domains x lines in transactions of `batch` (as the indexer does
per poll, one upsert_results call), replays them all (every upsert a no-op), then times the console's queries and one drift pass.
The database must be empty (a fresh file or database): the figures would mix in its rows otherwise.
"""
from __future__ import annotations

import argparse
import statistics
import time
from datetime import datetime, timedelta, timezone

import numpy as np

from services.index import FrameFilter, IndexSettings, InspectionIndex, create_index_engine, upgrade
from services.index.drift import DomainCalibration, DriftWatch
from services.index.metrics import IndexMetrics
from services.index.repository import EventPosition
from services.protocol.messages import InspectionResult, MapStatistics, Verdict, verdict_for

# Recent capture times: the drift watch follows only lines with frames in the last day.
T0 = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=1)


def synthetic_results(events: int, domains: int, lines: int, seed: int = 0) -> list[InspectionResult]:
    rng = np.random.default_rng(seed)
    scores = rng.beta(2, 8, events)
    results = []
    for i in range(events):
        domain, line = f"domain-{i % domains}", f"line-{(i // domains) % lines}"
        score = float(scores[i])
        results.append(InspectionResult(
            frame_id=f"frame-{i:08d}", domain=domain, line=line, timestamp=T0 + timedelta(milliseconds=10 * i),
            score=score, threshold=0.5, verdict=verdict_for(score, 0.5), bucket="inctrl-results",
            result_key=f"results/{domain}/{line}/2026-12-01/frame-{i:08d}/result.json",
            map_key=f"results/{domain}/{line}/2026-12-01/frame-{i:08d}/map.png",
            overlay_key=f"results/{domain}/{line}/2026-12-01/frame-{i:08d}/overlay.jpg",
            model_version="bench", reference_version=f"{domain}/v1", latency_ms=20.0,
            map_statistics=MapStatistics(max=score, mean=score / 3, threshold=0.5, area_above_threshold=0.01),
        ))  # fmt: skip
    return results


def write(index: InspectionIndex, results: list[InspectionResult], batch: int) -> tuple[float, int]:
    """Seconds to upsert every result in transactions of `batch`, and how many rows changed."""
    changed = 0
    started = time.perf_counter()
    for start in range(0, len(results), batch):
        events = [(result, EventPosition(0, offset)) for offset, result in enumerate(results[start : start + batch], start)]
        with index.session() as session, session.begin():
            changed += index.upsert_results(events, session=session)
    return time.perf_counter() - started, changed


def timed(call, repeats: int) -> tuple[float, float]:
    """(p50, p95) milliseconds of `repeats` calls."""
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        samples.append(1000 * (time.perf_counter() - started))
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, int(0.95 * len(samples)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--domains", type=int, default=3)
    parser.add_argument("--lines", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()

    engine = create_index_engine(args.database_url)
    upgrade(engine)
    index = InspectionIndex(engine)
    results = synthetic_results(args.events, args.domains, args.lines)
    insert_s, inserted = write(index, results, args.batch)
    replay_s, replayed = write(index, results, args.batch)
    assert inserted == args.events and replayed == 0, (inserted, replayed)

    rows = [
        ("insert", f"{args.events / insert_s:,.0f} events/s", f"{args.events} events, batch {args.batch}"),
        ("replay (no-op upserts)", f"{args.events / replay_s:,.0f} events/s", "every event already indexed"),
    ]
    queries = {
        "recent(limit=100)": lambda: index.recent(limit=100),
        "recent(domain, line, anomalous)": lambda: index.recent(
            FrameFilter(domain="domain-1", line="line-2", verdict=Verdict.ANOMALOUS), limit=100
        ),
        "recent(time range)": lambda: index.recent(
            FrameFilter(since=T0 + timedelta(seconds=30), until=T0 + timedelta(seconds=60)), limit=100
        ),
        "get(domain, line, frame_id)": lambda: index.get("domain-0", "line-0", "frame-00000000"),
        "scores(domain, line, window 200)": lambda: index.scores("domain-0", "line-0", limit=200),
    }
    for name, call in queries.items():
        p50, p95 = timed(call, args.repeats)
        rows.append((name, f"p50 {p50:.2f} ms", f"p95 {p95:.2f} ms"))
    calibrations = [
        DomainCalibration(domain=f"domain-{d}", reference_version=f"domain-{d}/v1",
                          normal_scores=tuple(np.random.default_rng(d).beta(2, 8, 64)))
        for d in range(args.domains)
    ]  # fmt: skip

    class Source:
        def calibrations(self) -> list[DomainCalibration]:
            return calibrations

    watch = DriftWatch(index, Source(), IndexSettings(), lambda alert: None, IndexMetrics())
    p50, p95 = timed(watch.evaluate, max(3, args.repeats // 10))
    rows.append((f"drift pass ({args.domains * args.lines} lines)", f"p50 {p50:.1f} ms", f"p95 {p95:.1f} ms"))

    print(f"database: {engine.url.render_as_string(hide_password=True)} ({engine.dialect.name})")
    print("| what | figure | note |\n|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
