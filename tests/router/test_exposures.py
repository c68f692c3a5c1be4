"""The exposure log: keyed events, an outage that never blocks, an honest drop count."""

from __future__ import annotations

import os
from typing import Any

import pytest
from confluent_kafka import Producer

from services.common.events import ExposureEvent, parse
from services.router.exposures import ExposureLog, producer_config
from services.router.metrics import RouterMetrics
from tests.infra import wait_until
from tests.router.fake_kafka import FakeProducer


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


def make(capacity: int = 100_000) -> tuple[ExposureLog, list[FakeProducer], RouterMetrics]:
    producers: list[FakeProducer] = []
    metrics = RouterMetrics()

    def factory(on_delivery: Any) -> FakeProducer:
        producers.append(FakeProducer(on_delivery, capacity))
        return producers[-1]

    return ExposureLog(factory, "exposures", metrics), producers, metrics


def dropped(metrics: RouterMetrics, reason: str) -> float | None:
    return metrics.registry.get_sample_value(
        "marquee_router_exposure_events_dropped_total", {"reason": reason}
    )


def gauges(metrics: RouterMetrics) -> tuple[float | None, float | None]:
    return (
        metrics.registry.get_sample_value("marquee_router_exposure_events_sent_total"),
        metrics.registry.get_sample_value("marquee_router_exposure_events_buffered"),
    )


def test_events_are_sent_in_order_keyed_by_user_in_the_contracts_format() -> None:
    log, producers, metrics = make()
    for user in range(1, 26):
        assert log.record(event(user))
    assert log.buffered == 25 and gauges(metrics) == (0, 25)
    log.poll_once()
    (producer,) = producers
    assert [k for _, k, _ in producer.records] == [str(u).encode() for u in range(1, 26)]
    assert {t for t, _, _ in producer.records} == {"exposures"}
    assert parse(producer.records[0][2]) == event(1)
    assert (log.recorded, log.sent, log.dropped, log.buffered) == (25, 25, 0, 0)
    assert gauges(metrics) == (25, 0)


def test_an_outage_keeps_what_was_taken_drops_overflow_and_catches_up() -> None:
    log, producers, metrics = make(capacity=20)
    for user in range(1, 11):
        log.record(event(user))
    producers[0].down = True
    log.poll_once()
    for user in range(11, 41):
        log.record(event(user))  # 10 more fit the producer's queue; the rest are dropped
    assert log.dropped == 20 and log.buffered == 20 and log.sent == 0
    assert log.recorded == log.sent + log.dropped + log.buffered
    producers[0].down = False
    log.poll_once()
    assert (log.sent, log.dropped, log.buffered) == (20, 20, 0)
    assert [int(k) for _, k, _ in producers[0].records] == list(range(1, 21)), "in order"
    assert gauges(metrics) == (20, 0)
    assert dropped(metrics, "buffer_full") == 20


def test_a_failed_delivery_is_dropped_with_its_reason() -> None:
    log, producers, metrics = make()
    for user in range(1, 6):
        log.record(event(user))
    producers[0].fail_next = 2
    log.poll_once()
    assert (log.recorded, log.sent, log.dropped, log.buffered) == (5, 3, 2, 0)
    assert dropped(metrics, "delivery_failed") == 2
    assert gauges(metrics) == (3, 0)


def test_the_thread_counts_in_the_background_and_stop_drains() -> None:
    log, _, _ = make()
    log.start()
    for user in range(1, 101):
        log.record(event(user))
    wait_until(lambda: log.sent == 100, timeout=10)
    log.record(event(101))
    log.stop(timeout=5)
    assert log.sent == 101 and log.dropped == 0


def test_what_stop_cannot_send_is_dropped_as_shutdown() -> None:
    log, producers, metrics = make()
    log.start()
    producers[0].down = True
    for user in range(1, 8):
        log.record(event(user))
    log.stop(timeout=0.1)
    assert (log.recorded, log.sent, log.dropped, log.buffered) == (7, 0, 7, 0)
    assert dropped(metrics, "shutdown") == 7
    assert gauges(metrics) == (0, 0)


def test_each_process_makes_its_own_producer(monkeypatch: pytest.MonkeyPatch) -> None:
    log, producers, _ = make()
    log.record(event(1))
    log.record(event(2))
    assert len(producers) == 1
    # A forked gunicorn worker: librdkafka's threads did not survive the fork.
    monkeypatch.setattr(os, "getpid", lambda: -7)
    log.record(event(3))
    assert len(producers) == 2 and len(producers[1]) == 1
    assert log.recorded == 1, "the worker counts its own events"


def test_a_producer_that_cannot_be_made_drops_and_counts() -> None:
    metrics = RouterMetrics()

    def factory(on_delivery: Any) -> FakeProducer:
        raise ValueError("bad setting")

    log = ExposureLog(factory, "exposures", metrics)
    assert not log.record(event(1)) and not log.record(event(2))
    assert (log.recorded, log.dropped) == (2, 2)
    assert dropped(metrics, "no_producer") == 2


def config(**overrides: Any) -> dict[str, Any]:
    return producer_config(
        "127.0.0.1:1",  # nothing listens: the broker is away
        buffer_size=overrides.pop("buffer_size", 100),
        batch_size=50,
        linger_s=1.0,
        request_timeout_ms=5000,
    )


def test_the_real_client_takes_the_settings_and_never_blocks_without_a_broker() -> None:
    """librdkafka itself: the config is valid, its bounded queue overflows into drops."""
    metrics = RouterMetrics()
    log = ExposureLog(
        lambda on_delivery: Producer({**config(), "on_delivery": on_delivery}),
        "exposures",
        metrics,
    )
    for user in range(1, 1001):
        log.record(event(user))
    assert (log.recorded, log.dropped, log.buffered) == (1000, 900, 100)
    log.poll_once()
    assert log.sent == 0 and log.buffered == 100, "nothing is acknowledged without a broker"
    log.stop(timeout=0.5)
    assert (log.recorded, log.sent, log.dropped) == (1000, 0, 1000)
    assert dropped(metrics, "buffer_full") == 900 and dropped(metrics, "shutdown") == 100


def test_the_producer_is_idempotent_and_never_gives_up_on_an_event() -> None:
    cfg = config(buffer_size=1234)
    assert cfg["enable.idempotence"] is True and cfg["acks"] == "all"
    assert cfg["message.timeout.ms"] == 0, "no local timeout: an outage fills the queue instead"
    assert cfg["queue.buffering.max.messages"] == 1234
    assert cfg["delivery.report.only.error"] is True
