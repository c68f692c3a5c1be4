"""Simulator throughput and memory: backfill lines/s to a file and to real Kafka, peak RSS.

Each measurement runs ``marquee sim backfill`` in a child process over the default world
(1,000,000 users x 27,000 movies; smaller with ``quick``) so its peak RSS is the child's own.
Kafka is a broker of the benchmark's own on port 29196.  The baseline is kafka-python's plain
``KafkaProducer`` (``--kafka-mode producer``) in the same run: the ratio is the comparison.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PORT = 29196


def _backfill(args: list[str]) -> dict[str, Any]:
    """Run one backfill child; return its summary plus wall time and peak RSS."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "services.cli", "sim", "--log-level", "WARNING", "backfill", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
        env={**os.environ, "MARQUEE_SIM_LOG_JSON": "true"},
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"backfill failed: {proc.stderr[-2000:]}")
    summary = json.loads(proc.stderr.strip().splitlines()[-1])
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {
        "lines": summary["lines_total"],
        "stream_seconds": summary["wall_seconds"],
        "lines_per_second": round(summary["lines_total"] / summary["wall_seconds"]),
        "process_seconds": round(wall, 2),
        "peak_rss_mib_so_far": round(max(before, after) / 1024, 1),
    }


def run(quick: bool) -> dict[str, Any]:
    """Measure backfill to file and Kafka (fast encoder vs plain producer) and peak RSS."""
    from tests.infra import start_kafka

    users, movies = (100_000, 27_000) if quick else (1_000_000, 27_000)
    n = 500_000 if quick else 3_000_000
    world = ["--users", str(users), "--movies", str(movies), "--seed", "42",
             "--target", "builtin:popularity", "--max-events", str(n)]  # fmt: skip
    out: dict[str, Any] = {"users": users, "movies": movies, "lines_requested": n}
    with tempfile.TemporaryDirectory() as tmp:
        f = _backfill([*world, "--days", "30", "--out", f"{tmp}/s.log", "--run-dir", tmp])
        out["file"] = f
        out["truth_mib"] = round(
            sum(p.stat().st_size for p in Path(tmp, "truth").iterdir()) / 2**20, 1
        )
    broker = start_kafka(PORT)
    try:
        fast_topic = broker.create_topic("bench-fast", partitions=3)
        slow_topic = broker.create_topic("bench-producer", partitions=3)
        kafka = ["--kafka", broker.bootstrap, "--days", "30", "--no-truth"]
        out["kafka_fast"] = _backfill([*world, *kafka, "--topic", fast_topic])
        base = [a if a != str(n) else str(min(n, 500_000)) for a in world]
        out["kafka_producer_baseline"] = _backfill(
            [*base, *kafka, "--topic", slow_topic, "--kafka-mode", "producer"]
        )
    finally:
        broker.stop()
    out["kafka_speedup_vs_producer"] = round(
        out["kafka_fast"]["lines_per_second"] / out["kafka_producer_baseline"]["lines_per_second"],
        2,
    )
    out["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)
    out["rss_within_2gib"] = out["peak_rss_mib"] <= 2048
    out["kafka_at_least_100k_per_s"] = out["kafka_fast"]["lines_per_second"] >= 100_000
    return out


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
