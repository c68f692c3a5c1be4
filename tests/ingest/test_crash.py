"""Exactly once under kill -9 of the ingest process, a broker restart and a broker kill -9.

The kill -9 test runs one ingest over two topics at once (a stream and an exposures topic, as
in production), so positions per (topic, partition) are what it checks.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import requests

from services.common.events import parse
from services.common.kafka import make_producer
from services.common.settings import KafkaSettings
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
from tests.ingest.streamgen import MALFORMED, exposure_lines, lines
from tests.ingest.verify import assert_exactly_once

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _stream(n: int, seed: int, malformed: list[tuple[bytes, str]] = MALFORMED) -> list[bytes]:
    """``n`` valid lines with one malformed line of every kind spread through them."""
    values = [v.encode() for v in lines(n, seed=seed)]
    step = n // len(malformed)
    for i, (raw, _) in enumerate(malformed):
        values.insert(i * step + step // 2, raw)
    return values


# Malformed lines on the exposures topic: parse errors only (no time checks involved).
EXPOSURE_MALFORMED = [(m, r) for m, r in MALFORMED if r in ("empty_line", "bad_user_id")]


def _exposures(n: int, seed: int) -> list[bytes]:
    """``n`` exposure lines with a few malformed ones among them."""
    values = [v.encode() for v in exposure_lines(n, seed=seed)]
    step = n // len(EXPOSURE_MALFORMED)
    for i, (raw, _) in enumerate(EXPOSURE_MALFORMED):
        values.insert(i * step + step // 2, raw)
    return values


class _Producer(threading.Thread):
    """Produces ``values`` in chunks at a pace, so that the stream spans the whole test.

    ``idempotent`` uses the platform's producer (``make_producer``), which retries through a
    broker crash without writing a record twice; otherwise a plain one that never retries.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        values: list[bytes],
        chunk: int,
        pause: float,
        idempotent: bool = False,
    ):
        super().__init__(daemon=True)
        self.bootstrap, self.topic, self.values = bootstrap, topic, values
        self.chunk, self.pause, self.idempotent = chunk, pause, idempotent
        self.hold = threading.Event()
        self.idle = threading.Event()
        self.sent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            p = (
                make_producer(KafkaSettings(kafka_bootstrap_servers=self.bootstrap))
                if self.idempotent
                else producer(self.bootstrap)
            )
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
                    f.get(timeout=180)  # through a broker restart when idempotent
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


def _finish(store: Path, bootstrap: str, topics: list[str], env: dict, log: Path) -> None:
    """Run ingest until everything in the topics is durable, then SIGTERM: must exit 0."""
    total = sum(sum(end_offsets(bootstrap, t).values()) for t in topics)
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
    exposures = kafka.create_topic(f"exposures-{topic}")  # same partitions, same offsets
    shown = _exposures(24_000, seed=12)
    dlq = kafka.create_topic(partitions=1)
    store, log = tmp_path / "store", tmp_path / "ingest.log"
    env = ingest_env(
        kafka.bootstrap,
        [topic, exposures],
        dlq,
        flush_max_events=15_000,
        flush_interval_s=0.3,
        # Compact often, so that some kills land inside a compaction too.
        compact_interval_s=1,
        compact_min_files=4,
    )
    prod = _Producer(kafka.bootstrap, topic, values, chunk=8_000, pause=0.8)
    router = _Producer(kafka.bootstrap, exposures, shown, chunk=1_000, pause=0.8)
    prod.start()
    router.start()
    kills, progressed, last = 0, 0, 0
    while kills < 12 or prod.is_alive() or router.is_alive():
        port = free_port()
        proc = spawn_ingest(store, port, env, log)
        if kills % 4 == 3:
            time.sleep(rng.uniform(0.3, 2.0))  # during start-up, recovery or the group join
        elif kills % 4 == 0:
            wait_until(lambda port=port: _ready(port), 60, 0.05, "readiness")
            time.sleep(rng.uniform(0.0, 1.5))  # while consuming, flushing or compacting
        else:
            # Right after a commit, in the middle of the next batch: on a loaded machine a
            # random sleep alone may kill every process before it stores anything.  Waits only
            # while there is something left to store.
            wait_until(
                lambda last=last: _durable(store) > last
                or (
                    not (prod.is_alive() or router.is_alive())
                    and _durable(store) >= prod.sent + router.sent
                ),
                120,
                0.05,
                "a commit",
            )
            time.sleep(rng.uniform(0.0, 0.5))
        assert proc.poll() is None, log.read_text()[-3000:]
        kill9(proc)
        kills += 1
        now = _durable(store)
        progressed += now > last
        last = now
    prod.join()
    router.join()
    assert prod.error is None and router.error is None, (prod.error, router.error)
    _finish(store, kafka.bootstrap, [topic, exposures], env, log)
    records = {t: read_topic(kafka.bootstrap, t) for t in (topic, exposures)}
    got = assert_exactly_once(store, records)
    valid = sum(1 for v in values if parse(v).kind != "rejected") - 2  # 2 are time-rejected
    valid_shown = len(shown) - len(EXPOSURE_MALFORMED)
    assert got["events"] == valid + valid_shown
    assert got["quarantined"] == len(MALFORMED) + len(EXPOSURE_MALFORMED)
    assert EventStore(store).counts()["exposure"] == valid_shown
    # Not vacuous: several kills hit a process that had stored something since the last one.
    # (How many depends on the machine's load, so the bar is a floor, not a share of kills.)
    assert kills >= 10 and progressed >= 3, (kills, progressed)
    dlq_records = read_topic(kafka.bootstrap, dlq)
    malformed = {m for m, _ in MALFORMED}
    assert {
        (h["topic"].decode(), int(h["partition"]), int(h["offset"])) for _, _, _, h in dlq_records
    } == {(t, p, o) for t, recs in records.items() for p, o, v, _ in recs if v in malformed}
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
        got = assert_exactly_once(store, {topic: read_topic(broker.bootstrap, topic)})
        valid = sum(1 for v in values if parse(v).kind != "rejected") - 2
        assert got["events"] == valid
        assert got["quarantined"] == len(MALFORMED)
    finally:
        broker.stop()


def test_broker_kill9_while_producing_loses_and_doubles_nothing(
    tmp_path: Path, kafka: KafkaBroker
) -> None:
    """SIGKILL of the broker mid-stream, the producer still sending: it retries idempotently,
    ingest rides it out, and topic and store hold every line exactly once."""
    broker = start_kafka(kafka.port + 60)
    try:
        topic = broker.create_topic()
        dlq = broker.create_topic(partitions=1)
        values = _stream(40_000, seed=8)
        store, log = tmp_path / "store", tmp_path / "ingest.log"
        env = ingest_env(broker.bootstrap, topic, dlq, flush_max_events=4_000, flush_interval_s=0.3)
        prod = _Producer(broker.bootstrap, topic, values, chunk=1_000, pause=0.3, idempotent=True)
        prod.start()
        proc = spawn_ingest(store, free_port(), env, log)
        try:
            wait_until(lambda: _durable(store) > 4_000, 60, 0.1, "first commits")
            assert prod.is_alive() and prod.sent < len(values) // 2, prod.sent
            broker.kill()
            killed_at = prod.sent
            time.sleep(2)
            assert proc.poll() is None, "ingest must survive the broker crashing"
            broker.start()
            prod.join(180)
            assert not prod.is_alive() and prod.error is None, prod.error
            total = sum(end_offsets(broker.bootstrap, topic).values())
            wait_until(lambda: _durable(store) >= total, 120, 0.2, "the store to catch up")
        finally:
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(timeout=60)
        assert rc == 0, log.read_text()[-3000:]
        records = read_topic(broker.bootstrap, topic)
        # The producer: every line once in the topic, none lost, none doubled by its retries.
        assert len(records) == len(values)
        assert Counter(v for _, _, v, _ in records) == Counter(values)
        got = assert_exactly_once(store, {topic: records})
        valid = sum(1 for v in values if parse(v).kind != "rejected") - 2
        assert got["events"] == valid
        assert got["quarantined"] == len(MALFORMED)
        # The dead-letter topic is at least once: every rejected line, perhaps some twice.
        letters = [
            (int(h["partition"]), int(h["offset"]))
            for _, _, _, h in read_topic(broker.bootstrap, dlq)
        ]
        malformed = {m for m, _ in MALFORMED}
        assert set(letters) == {(p, o) for p, o, v, _ in records if v in malformed}
        dup = len(letters) - len(set(letters))
        print(f"killed after {killed_at} lines sent; dead-letter duplicates={dup}")
    finally:
        broker.stop()
