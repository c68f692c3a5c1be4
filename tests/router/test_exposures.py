"""The exposure log: batches, keys, an outage that never blocks, an honest drop count."""

from __future__ import annotations

import threading
import time
from typing import Any

from services.common.events import ExposureEvent, parse
from services.router.exposures import ExposureLog
from services.router.metrics import RouterMetrics
from tests.infra import wait_until


class Future:
    def __init__(self, ok: bool, done: bool = True) -> None:
        self.ok = ok
        self.is_done = done

    def succeeded(self) -> bool:
        return self.ok


class FakeProducer:
    """Records what was sent; ``down`` makes sends fail as an absent broker does."""

    def __init__(self) -> None:
        self.down = False
        self.records: list[tuple[str, bytes, bytes]] = []
        self.flushes = 0

    def send(self, topic: str, value: bytes | None = None, key: bytes | None = None) -> Any:
        if self.down:
            raise TimeoutError("Failed to update metadata after 2.0 secs.")
        assert value is not None and key is not None
        self.records.append((topic, key, value))
        return Future(True)

    def flush(self, timeout: float | None = None) -> None:
        self.flushes += 1

    def close(self, timeout: float | None = None) -> None:
        pass


def event(user: int) -> ExposureEvent:
    return ExposureEvent(
        1_764_000_000_000_000_000,
        user,
        "e",
        "control",
        "svd",
        "v1",
        200,
        3,
        None,
        ("a+1999",),
        None,
        3,
    )


def test_events_are_sent_in_batches_keyed_by_user() -> None:
    producer = FakeProducer()
    log = ExposureLog(lambda: producer, "exposures", RouterMetrics(), batch_size=10)
    for user in range(1, 26):
        assert log.record(event(user))
    assert log.buffered == 25
    while log.buffered:
        assert log.flush_once()
    assert producer.flushes == 3  # 10 + 10 + 5
    assert [k for _, k, _ in producer.records] == [str(u).encode() for u in range(1, 26)]
    assert {t for t, _, _ in producer.records} == {"exposures"}
    assert parse(producer.records[0][2]) == event(1)
    assert (log.recorded, log.sent, log.dropped) == (25, 25, 0)


def test_an_outage_keeps_the_batch_drops_overflow_and_catches_up() -> None:
    producer = FakeProducer()
    metrics = RouterMetrics()
    log = ExposureLog(lambda: producer, "exposures", metrics, buffer_size=20, batch_size=5)
    producer.down = True
    for user in range(1, 11):
        log.record(event(user))
    assert not log.flush_once()  # the batch of 5 stays pending
    for user in range(11, 41):
        log.record(event(user))  # 5 pending + 20 queued; the rest are dropped
    assert log.dropped == 15 and log.buffered == 25
    assert log.recorded == log.sent + log.dropped + log.buffered
    producer.down = False
    while log.buffered:
        assert log.flush_once()
    assert log.sent == 25 and log.dropped == 15
    sent = [int(k) for _, k, _ in producer.records]
    assert sent == sorted(sent) and sent[:10] == list(range(1, 11)), "retried in order, first"
    assert metrics.registry.get_sample_value("marquee_router_exposure_events_sent_total") == 25
    dropped = metrics.registry.get_sample_value(
        "marquee_router_exposure_events_dropped_total", {"reason": "buffer_full"}
    )
    assert dropped == 15


def test_record_never_blocks_while_the_sender_is_stuck() -> None:
    gate = threading.Event()

    class Stuck(FakeProducer):
        def flush(self, timeout: float | None = None) -> None:
            gate.wait(timeout)  # a broker that does not answer

    log = ExposureLog(Stuck, "exposures", RouterMetrics(), buffer_size=100, flush_timeout_s=5)
    log.start()
    try:
        started = time.perf_counter()
        for user in range(1, 1001):
            log.record(event(user))
        assert time.perf_counter() - started < 0.5
        assert log.dropped > 0
    finally:
        gate.set()
        log.stop(timeout=2)
    assert log.recorded == log.sent + log.dropped == 1000


def test_the_thread_sends_in_the_background_and_stop_drains() -> None:
    producer = FakeProducer()
    log = ExposureLog(lambda: producer, "exposures", RouterMetrics())
    log.start()
    for user in range(1, 101):
        log.record(event(user))
    wait_until(lambda: log.sent == 100, timeout=10)
    log.record(event(101))
    log.stop(timeout=5)
    assert log.sent == 101 and log.dropped == 0


def test_factory_failures_are_retried() -> None:
    attempts = [0]
    producer = FakeProducer()

    def factory() -> FakeProducer:
        attempts[0] += 1
        if attempts[0] < 3:
            raise OSError("NoBrokersAvailable")
        return producer

    log = ExposureLog(factory, "exposures", RouterMetrics())
    log.record(event(1))
    assert not log.flush_once() and not log.flush_once()
    assert log.flush_once() and log.sent == 1


def test_a_send_of_unknown_outcome_is_waited_on_never_sent_twice() -> None:
    futures: list[Future] = []

    class Slow(FakeProducer):
        def send(self, topic: str, value: bytes | None = None, key: bytes | None = None) -> Any:
            super().send(topic, value, key)
            futures.append(Future(False, done=False))  # the broker has not answered yet
            return futures[-1]

    producer = Slow()
    log = ExposureLog(lambda: producer, "exposures", RouterMetrics(), batch_size=10)
    for user in range(1, 6):
        log.record(event(user))
    assert not log.flush_once() and not log.flush_once()
    assert len(producer.records) == 5, "still waiting: nothing sent again"
    futures[0].is_done = True  # the producer gave up on the first one
    for f in futures[1:]:
        f.ok = f.is_done = True
    assert not log.flush_once()
    assert log.sent == 4 and log.buffered == 1
    assert not log.flush_once()
    assert len(producer.records) == 6, "only the failed one is sent again"
    futures[-1].ok = futures[-1].is_done = True
    assert log.flush_once() and log.sent == 5 and log.buffered == 0


def test_a_trickle_of_events_is_sent_in_few_batches() -> None:
    producer = FakeProducer()
    log = ExposureLog(lambda: producer, "exposures", RouterMetrics(), linger_s=0.3)
    log.start()
    try:
        for user in range(1, 31):  # 30 events over about 0.3 s, as requests arrive
            log.record(event(user))
            time.sleep(0.01)
        wait_until(lambda: log.sent == 30, timeout=5)
    finally:
        log.stop(timeout=2)
    # Without lingering each event would wake the sender for a flush of its own.
    assert producer.flushes <= 4
    assert [k for _, k, _ in producer.records] == [str(u).encode() for u in range(1, 31)]
