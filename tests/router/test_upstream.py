"""Upstream calls: answers checked strictly, every failure named, a breaker per arm."""

from __future__ import annotations

import time

import pytest

from services.router.upstream import CircuitBreaker, Upstream, check_body
from tests.infra import free_port
from tests.router.stub import StubRecommender, items_for


@pytest.mark.parametrize(
    ("body", "ok"),
    [
        (b"a+1999,b+2000", True),
        (",".join(f"m{i}+" for i in range(20)).encode(), True),
        (",".join(f"m{i}+" for i in range(21)).encode(), False),
        (b"a+1999,a+1999", False),
        (b"", False),
        (b"a+1999, b+2000", False),
        (b'["a+1999"]', False),
        (b"\xff\xfe", False),
        (b"a+1999\n", False),
    ],
)
def test_check_body(body: bytes, ok: bool) -> None:
    assert (check_body(body) is not None) is ok


def test_breaker_opens_after_failures_then_probes_back() -> None:
    now = [0.0]
    breaker = CircuitBreaker(failures=3, cooldown_s=5.0, clock=lambda: now[0])
    for _ in range(2):
        assert breaker.allow()
        breaker.record(False)
    assert breaker.state == "closed"
    breaker.record(True)  # a success resets the count
    for _ in range(3):
        assert breaker.allow()
        breaker.record(False)
    assert breaker.state == "open" and not breaker.allow()
    now[0] = 5.1
    assert breaker.state == "half_open"
    assert breaker.allow(), "one probe goes through"
    assert not breaker.allow(), "and only one"
    breaker.record(False)
    assert breaker.state == "open" and not breaker.allow()
    now[0] = 10.3
    assert breaker.allow()
    breaker.record(True)
    assert breaker.state == "closed" and breaker.allow()


@pytest.fixture
def stub() -> StubRecommender:
    s = StubRecommender("control")
    yield s  # type: ignore[misc]
    s.close()


def test_upstream_answers_and_failures(stub: StubRecommender) -> None:
    up = Upstream()
    reply = up.recommend(stub.url, 42, 0.5)
    assert reply.ok and list(reply.items) == items_for("control", 42)
    assert reply.model == ("control", "control-v1")
    assert reply.headers["X-Model-Family"] == "stub"
    for mode, reason in (("error", "status_5xx"), ("garbage", "invalid_body"),
                         ("too_many", "invalid_body"), ("dead", "connect_error")):  # fmt: skip
        stub.mode = mode
        assert up.recommend(stub.url, 42, 0.5).reason == reason, mode
    stub.mode, stub.delay_s = "slow", 0.3
    started = time.perf_counter()
    reply = up.recommend(stub.url, 42, 0.1)
    assert reply.reason == "timeout" and time.perf_counter() - started < 0.25
    stub.mode = "ok"
    assert up.recommend(stub.url, 43, 0.5).ok, "the pool recovers after a timeout"
    assert up.recommend(f"http://127.0.0.1:{free_port()}", 1, 0.5).reason == "connect_error"
    assert up.recommend(stub.url, 1, 0.0).reason == "timeout"
