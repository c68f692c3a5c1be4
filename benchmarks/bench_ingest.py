"""Ingest throughput, Kafka -> Parquet, next to consumers that only read the same topic.

One broker of our own (port 29292), one topic filled once; then, each in a fresh process and
timed from its first record to its last:

- ``ingest``: the real ``IngestService`` (parse, validate, columns, Parquet, commit);
- ``raw_kafka_python``: a kafka-python consumer with the same fetch settings, no processing;
- ``kcat``: librdkafka's command line consumer, writing the lines to /dev/null.

Reported: events/s of each, the ingest/raw ratios, and the peak RSS of each Python process.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PORT = int(os.environ.get("MARQUEE_BENCH_KAFKA_PORT", "29292"))
POLL = {"max_poll_records": 20_000, "fetch_max_bytes": 64 * 1024 * 1024}


def _free_port(port: int) -> int:
    """``port``, or the first free one 200 above it when another broker holds it already."""
    import socket

    for candidate in range(port, port + 2_000, 200):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", candidate)) != 0:
                return candidate
    raise RuntimeError(f"no free port near {port}")


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def child_raw(bootstrap: str, topic: str, n: int) -> dict[str, Any]:
    """Read ``n`` records with kafka-python and do nothing with them."""
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        max_partition_fetch_bytes=16 * 1024 * 1024,
        check_crcs=False,
        **POLL,
    )
    parts = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic) or ())]
    c.assign(parts)
    c.seek_to_beginning(*parts)
    seen, t0 = 0, None
    while seen < n:
        batch = c.poll(timeout_ms=500)
        if batch and t0 is None:
            t0 = time.perf_counter()
        for recs in batch.values():
            seen += len(recs)
    elapsed = time.perf_counter() - (t0 or time.perf_counter())
    c.close()
    return {"events": seen, "seconds": elapsed, "peak_rss_mb": _peak_rss_mb()}


def child_ingest(bootstrap: str, topic: str, n: int, store: str) -> dict[str, Any]:
    """Run the real ingest service until ``n`` lines are durable in the store."""
    from services.ingest.consumer import IngestService
    from services.ingest.settings import IngestSettings

    settings = IngestSettings(
        kafka_bootstrap_servers=bootstrap,
        store_path=Path(store),
        topic=topic,
        dlq_topic=f"{topic}-dlq",
        group_id=f"bench-{topic}-{os.getpid()}",
        group_instance_id=None,
        session_timeout_ms=6_000,
        flush_max_events=200_000,
        flush_interval_s=10.0,
        **POLL,
    )
    svc = IngestService(settings)
    ing = svc.ingestor
    state: dict[str, float] = {}
    add, flush = ing.add, ing.flush

    def timed_add(partition: int, records: Any, topic: str | None = None) -> int:
        started = time.perf_counter()
        state.setdefault("t0", started)
        got = add(partition, records, topic)
        if sum(ing.next_offset(p, topic) or 0 for p in range(3)) >= n:
            ing.flush_interval_s = 0.0  # everything is in: flush now, not at the next tick
        state["add_s"] = state.get("add_s", 0.0) + time.perf_counter() - started
        return got

    def timed_flush() -> Any:
        started = time.perf_counter()
        commit = flush()
        state["flush_s"] = state.get("flush_s", 0.0) + time.perf_counter() - started
        if sum(svc.store.next_offsets().values()) >= n and "t1" not in state:
            state["t1"] = time.perf_counter()
            svc.stop()
        return commit

    ing.add = timed_add  # type: ignore[method-assign]
    ing.flush = timed_flush  # type: ignore[method-assign]
    rc = svc.run()
    rows = sum(v for k, v in svc.store.counts().items())
    return {
        "rc": rc,
        "events": rows,
        "seconds": state["t1"] - state["t0"],
        # Where the time went: parse + buffer (add), columns + Parquet + fsync (flush), and
        # the rest, which is kafka-python fetching and decoding records inside poll().
        "add_seconds": round(state["add_s"], 3),
        "flush_seconds": round(state["flush_s"], 3),
        "peak_rss_mb": _peak_rss_mb(),
        "commits": len(svc.store.commits),
    }


def _child(kind: str, *args: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_ingest", kind, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "PYTHONPATH": str(ROOT), "MARQUEE_LOG_LEVEL": "WARNING"},
    )
    if out.returncode != 0:
        raise RuntimeError(f"{kind} failed: {out.stderr[-2000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def _fill(bootstrap: str, topic: str, n: int, work: Path) -> None:
    """Write ``n`` stream lines to the topic (kcat when installed: it is much faster)."""
    sys.path.insert(0, str(ROOT))
    from tests.ingest.streamgen import lines

    path = work / "lines.txt"
    path.write_text("\n".join(lines(n, seed=1, users=100_000)) + "\n")
    if shutil.which("kcat"):
        subprocess.run(
            ["kcat", "-P", "-b", bootstrap, "-t", topic, "-l", "-X", "linger.ms=50", str(path)],
            check=True,
            timeout=600,
        )
        return
    from kafka import KafkaProducer

    p = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=50, batch_size=1 << 20)
    for i, line in enumerate(path.read_bytes().splitlines()):
        p.send(topic, value=line, partition=i % 3)
    p.flush()
    p.close()


def _kcat(bootstrap: str, topic: str, n: int) -> dict[str, Any] | None:
    if shutil.which("kcat") is None:
        return None
    started = time.perf_counter()
    subprocess.run(
        ["kcat", "-C", "-b", bootstrap, "-t", topic, "-o", "beginning", "-e", "-q", "-c", str(n)],
        check=True,
        stdout=subprocess.DEVNULL,
        timeout=600,
    )
    return {"events": n, "seconds": time.perf_counter() - started}


def run(quick: bool) -> dict[str, Any]:
    """Fill a topic once; time ingest, a raw kafka-python reader and kcat on it."""
    sys.path.insert(0, str(ROOT))
    from tests.infra import start_kafka

    n = 200_000 if quick else 1_000_000
    repeats = 2 if quick else 3
    broker = start_kafka(_free_port(PORT))
    work = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    try:
        topic = broker.create_topic("bench-ingest")
        broker.create_topic("bench-ingest-dlq", partitions=1)
        t = time.perf_counter()
        _fill(broker.bootstrap, topic, n, work)
        fill_s = time.perf_counter() - t
        results: dict[str, list[dict[str, Any]]] = {"ingest": [], "raw": [], "kcat": []}
        _kcat(broker.bootstrap, topic, n)  # warm the broker's page cache: no run pays for it
        for i in range(repeats):
            # Alternate the order so that neither reader always runs on a quieter machine.
            store = work / f"store-{i}"
            pair = [("raw", (broker.bootstrap, topic, str(n))),
                    ("ingest", (broker.bootstrap, topic, str(n), str(store)))]  # fmt: skip
            for kind, args in pair if i % 2 == 0 else pair[::-1]:
                results[kind].append(_child(kind, *args))
            k = _kcat(broker.bootstrap, topic, n)
            if k:
                results["kcat"].append(k)
        best = {k: min(v, key=lambda r: r["seconds"]) for k, v in results.items() if v}
        rate = {k: round(r["events"] / r["seconds"]) for k, r in best.items()}
        out: dict[str, Any] = {
            "events": n,
            "fill_seconds": round(fill_s, 2),
            "ingest_events_per_s": rate["ingest"],
            "raw_kafka_python_events_per_s": rate["raw"],
            "ingest_vs_raw_kafka_python": round(rate["ingest"] / rate["raw"], 3),
            "ingest_peak_rss_mb": best["ingest"]["peak_rss_mb"],
            "raw_kafka_python_peak_rss_mb": best["raw"]["peak_rss_mb"],
            "ingest_commits": best["ingest"]["commits"],
            "target_events_per_s": 100_000,
            "target_ratio": 0.5,
            "runs": results,
        }
        if "kcat" in rate:
            out["kcat_events_per_s"] = rate["kcat"]
            out["ingest_vs_kcat"] = round(rate["ingest"] / rate["kcat"], 3)
        assert best["ingest"]["events"] == n, "ingest stored a different number of events"
        return out
    finally:
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    kind, *rest = sys.argv[1:]
    if kind == "raw":
        res = child_raw(rest[0], rest[1], int(rest[2]))
    elif kind == "ingest":
        res = child_ingest(rest[0], rest[1], int(rest[2]), rest[3])
    else:
        print(json.dumps(run(quick=kind == "quick"), indent=2))
        sys.exit(0)
    print(json.dumps(res))
