"""Exactly once under kill -9 of the ingest process and under a broker restart (real Kafka)."""

from __future__ import annotations

import random
import signal
import threading
import time
from pathlib import Path

import pytest
import requests

from services.common.events import parse
from services.ingest.store import EventStore
from tests.infra import KafkaBroker, free_port, start_kafka, wait_until
from tests.ingest.helpers import (
    end_offsets,
    ingest_env,
    kill9,
    producer,
    read_topic,
    spawn_ingest,
)
from tests.ingest.streamgen import MALFORMED, lines
from tests.ingest.verify import assert_exactly_once

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _stream(n: int, seed: int) -> list[bytes]:
    """``n`` valid lines with one malformed line of every kind spread through them."""
    values = [v.encode() for v in lines(n, seed=seed)]
    step = n // len(MALFORMED)
    for i, (raw, _) in enumerate(MALFORMED):
        values.insert(i * step + step // 2, raw)
    return values


class _Producer(threading.Thread):
    """Produces ``values`` in chunks at a pace, so that the stream spans the whole test."""

    def __init__(self, bootstrap: str, topic: str, values: list[bytes], chunk: int, pause: float):
        super().__init__(daemon=True)
        self.bootstrap, self.topic, self.values = bootstrap, topic, values
        self.chunk, self.pause = chunk, pause
        self.hold = threading.Event()
        self.idle = threading.Event()
        self.sent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            p = producer(self.bootstrap)
            while self.sent < len(self.values):
                while self.hold.is_set():
                    self.idle.set()
                    time.sleep(0.05)
                self.idle.clear()
                part = self.values[self.sent : self.sent + self.chunk]
                futs = [
                    p.send(self.topic, value=v, partition=(self.sent + i) % 3)
                    for i, v in enumerate(part)
                ]
                p.flush()
                for f in futs:
                    f.get(timeout=30)
                self.sent += len(part)
                time.sleep(self.pause)
            p.close()
        except BaseException as exc:  # surfaced by the test
            self.error = exc
        finally:
            self.idle.set()


def _durable(store: Path) -> int:
    try:
        return sum(EventStore(store).next_offsets().values())
    except FileNotFoundError:
        return 0


def _ready(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
    except requests.RequestException:
        return False


def _finish(store: Path, bootstrap: str, topic: str, env: dict, log: Path) -> None:
    """Run ingest until everything in the topic is durable, then SIGTERM: must exit 0."""
    total = sum(end_offsets(bootstrap, topic).values())
    port = free_port()
    proc = spawn_ingest(store, port, env, log)
    try:
        wait_until(lambda: _ready(port), 60, 0.2, "readiness")
        wait_until(lambda: _durable(store) >= total, 120, 0.2, "the store to catch up")
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=60)
    assert rc == 0, log.read_text()[-3000:]


def test_kill9_at_random_points_stores_every_line_exactly_once(
    kafka: KafkaBroker, topic: str, tmp_path: Path
) -> None:
    rng = random.Random(4)
    values = _stream(200_000, seed=11)
    dlq = kafka.create_topic(partitions=1)
    store, log = tmp_path / "store", tmp_path / "ingest.log"
    env = ingest_env(
        kafka.bootstrap,
        topic,
        dlq,
        flush_max_events=15_000,
        flush_interval_s=0.3,
        # Compact often, so that some kills land inside a compaction too.
        compact_interval_s=1,
        compact_min_files=4,
    )
    prod = _Producer(kafka.bootstrap, topic, values, chunk=8_000, pause=0.8)
    prod.start()
    kills, progressed, last = 0, 0, 0
    while kills < 12 or prod.is_alive():
        port = free_port()
        proc = spawn_ingest(store, port, env, log)
        if kills % 4 == 3:
            time.sleep(rng.uniform(0.3, 2.0))  # during start-up, recovery or the group join
        else:
            wait_until(lambda port=port: _ready(port), 60, 0.05, "readiness")
            time.sleep(rng.uniform(0.0, 1.5))  # while consuming, flushing or compacting
        assert proc.poll() is None, log.read_text()[-3000:]
        kill9(proc)
        kills += 1
        now = _durable(store)
        progressed += now > last
        last = now
    prod.join()
    assert prod.error is None, prod.error
    _finish(store, kafka.bootstrap, topic, env, log)
    got = assert_exactly_once(store, read_topic(kafka.bootstrap, topic))
    valid = sum(1 for v in values if parse(v).kind != "rejected") - 2  # 2 are time-rejected
    assert got["events"] == valid
    assert got["quarantined"] == len(MALFORMED)
    assert kills >= 10 and progressed >= kills // 2, (kills, progressed)
    dlq_records = read_topic(kafka.bootstrap, dlq)
    assert {(int(h["partition"]), int(h["offset"])) for _, _, _, h in dlq_records} == {
        (p, o)
        for p, o, v, _ in read_topic(kafka.bootstrap, topic)
        if any(v == m for m, _ in MALFORMED)
    }
    print(f"kills={kills} progressed={progressed} events={got['events']}")


def test_broker_restart_mid_stream_loses_and_doubles_nothing(
    tmp_path: Path, kafka: KafkaBroker
) -> None:
    broker = start_kafka(kafka.port + 50)
    try:
        topic = broker.create_topic()
        dlq = broker.create_topic(partitions=1)
        values = _stream(60_000, seed=5)
        store, log = tmp_path / "store", tmp_path / "ingest.log"
        env = ingest_env(
            broker.bootstrap, topic, dlq, flush_max_events=10_000, flush_interval_s=0.5
        )
        prod = _Producer(broker.bootstrap, topic, values, chunk=3_000, pause=0.2)
        prod.start()
        proc = spawn_ingest(store, free_port(), env, log)
        try:
            wait_until(lambda: _durable(store) > 10_000, 60, 0.2, "first commits")
            prod.hold.set()
            prod.idle.wait(30)
            broker.stop()
            time.sleep(3)
            assert proc.poll() is None, "ingest must survive the broker going away"
            broker.start()
            prod.hold.clear()
            prod.join(120)
            assert prod.error is None, prod.error
            total = sum(end_offsets(broker.bootstrap, topic).values())
            wait_until(lambda: _durable(store) >= total, 120, 0.2, "the store to catch up")
        finally:
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(timeout=60)
        assert rc == 0, log.read_text()[-3000:]
        got = assert_exactly_once(store, read_topic(broker.bootstrap, topic))
        valid = sum(1 for v in values if parse(v).kind != "rejected") - 2
        assert got["events"] == valid
        assert got["quarantined"] == len(MALFORMED)
    finally:
        broker.stop()
