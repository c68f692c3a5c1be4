"""Helpers for ingest integration tests: run the real process, produce, read topics, wait."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from tests.infra import ROOT


def ingest_env(
    bootstrap: str, topics: str | Sequence[str], dlq: str, **extra: Any
) -> dict[str, str]:
    """Environment for an ingest subprocess reading ``topics`` (one name or several)."""
    names = [topics] if isinstance(topics, str) else list(topics)
    topic = names[0]
    env = {
        **os.environ,
        "MARQUEE_INGEST_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "MARQUEE_INGEST_TOPICS": ",".join(names),
        "MARQUEE_INGEST_DLQ_TOPIC": dlq,
        "MARQUEE_INGEST_GROUP_ID": f"ingest-{topic}",
        "MARQUEE_INGEST_GROUP_INSTANCE_ID": f"ingest-{topic}-0",
        "MARQUEE_INGEST_SESSION_TIMEOUT_MS": "6000",
        "MARQUEE_INGEST_KAFKA_CONNECT_TIMEOUT_S": "60",
        "MARQUEE_INGEST_LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT),
    }
    env.pop("MARQUEE_INGEST_TOPIC", None)  # the deprecated alias would clash with TOPICS
    env.update({f"MARQUEE_INGEST_{k.upper()}": str(v) for k, v in extra.items()})
    return env


def spawn_ingest(store: Path, port: int, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start ``python -m services.ingest run`` as a real process."""
    with log.open("ab") as fh:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "services.ingest",
                "run",
                "--store",
                str(store),
                "--port",
                str(port),
            ],
            cwd=ROOT,
            env=env,
            stdout=fh,
            stderr=fh,
        )


def kill9(proc: subprocess.Popen[bytes]) -> None:
    """kill -9 and reap."""
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def producer(bootstrap: str) -> KafkaProducer:
    """A plain producer for test data."""
    return KafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=20,
        batch_size=512 * 1024,
        max_in_flight_requests_per_connection=1,
        retries=0,  # a retried send could duplicate a line; the tests want the topic exact
    )


def produce(bootstrap: str, topic: str, values: Sequence[bytes], partitions: int = 3) -> None:
    """Send ``values`` round-robin over partitions and wait for every ack."""
    p = producer(bootstrap)
    futures = [p.send(topic, value=v, partition=i % partitions) for i, v in enumerate(values)]
    p.flush()
    for f in futures:
        f.get(timeout=30)
    p.close()


def read_topic(bootstrap: str, topic: str) -> list[tuple[int, int, bytes, dict[str, bytes]]]:
    """Every record of ``topic`` as (partition, offset, value, headers)."""
    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    parts = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic) or ())]
    c.assign(parts)
    c.seek_to_beginning(*parts)
    end = c.end_offsets(parts)
    out = []
    while any(c.position(tp) < end[tp] for tp in parts):
        for tp, recs in c.poll(timeout_ms=500).items():
            out += [(tp.partition, r.offset, r.value, dict(r.headers)) for r in recs]
    c.close()
    return out


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """Log-end offset per partition."""
    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    parts = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic) or ())]
    end = {tp.partition: o for tp, o in c.end_offsets(parts).items()}
    c.close()
    return end
