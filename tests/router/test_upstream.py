"""Upstream calls: answers checked strictly, every failure named, a breaker per arm."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest

from services.router.upstream import CircuitBreaker, Reply, Upstream, check_body
from tests.infra import free_port
from tests.router.stub import StubRecommender, items_for

Run = Callable[[Coroutine[Any, Any, Any]], Any]


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
def stub() -> Iterator[StubRecommender]:
    s = StubRecommender("control")
    yield s
    s.close()


@pytest.fixture
def run() -> Iterator[Callable[[Coroutine[Any, Any, Reply]], Reply]]:
    """Run calls on one event loop, as a router worker does."""
    with asyncio.Runner() as runner:
        yield runner.run


def test_upstream_answers_and_failures(stub: StubRecommender, run: Run) -> None:
    up = Upstream()
    reply = run(up.recommend(stub.url, 42, 0.5, "req-1"))
    assert reply.ok and list(reply.items) == items_for("control", 42)
    assert reply.model == ("control", "control-v1")
    assert reply.headers["X-Model-Family"] == "stub"
    assert stub.request_ids == ["req-1"] and stub.paths == ["/recommend/42"]
    for mode, reason in (("error", "status_5xx"), ("garbage", "invalid_body"),
                         ("too_many", "invalid_body"), ("dead", "connect_error"),
                         ("chunked", "invalid_body"), ("huge", "invalid_body")):  # fmt: skip
        stub.mode = mode
        assert run(up.recommend(stub.url, 42, 0.5)).reason == reason, mode
    stub.mode, stub.delay_s = "slow", 0.3
    started = time.perf_counter()
    reply = run(up.recommend(stub.url, 42, 0.1))
    assert reply.reason == "timeout" and time.perf_counter() - started < 0.25
    stub.mode = "ok"
    assert run(up.recommend(stub.url, 43, 0.5)).ok, "the pool recovers after a timeout"
    assert run(up.recommend(f"http://127.0.0.1:{free_port()}", 1, 0.5)).reason == "connect_error"
    assert run(up.recommend(stub.url, 1, 0.0)).reason == "timeout"


def test_connections_are_kept_alive_and_reused(stub: StubRecommender, run: Run) -> None:
    up = Upstream()
    for user in range(1, 51):
        assert run(up.recommend(stub.url, user, 0.5)).ok
    assert stub.connections == 1
    stub.mode = "error"  # a 5xx answer is complete: its connection stays usable
    assert run(up.recommend(stub.url, 1, 0.5)).reason == "status_5xx"
    stub.mode = "huge"  # the rest of a refused answer is still on the wire: never reused
    assert run(up.recommend(stub.url, 1, 0.5)).reason == "invalid_body"
    stub.mode = "ok"
    assert run(up.recommend(stub.url, 2, 0.5)).ok
    assert stub.connections == 2


def test_a_connection_the_server_dropped_is_retried_once_on_a_fresh_one(
    stub: StubRecommender, run: Run
) -> None:
    up = Upstream()
    stub.mode = "drop_reused"
    for user in range(1, 6):
        reply = run(up.recommend(stub.url, user, 0.5))
        assert reply.ok and list(reply.items) == items_for("control", user)
    # each call after the first found its kept-alive connection dropped and used a new one
    assert stub.connections == 5


def test_parallel_calls_use_parallel_connections(stub: StubRecommender, run: Run) -> None:
    up = Upstream(max_idle=4)
    stub.mode, stub.delay_s = "slow", 0.05

    async def burst() -> list[Reply]:
        return await asyncio.gather(*(up.recommend(stub.url, u, 0.5) for u in range(1, 9)))

    assert all(r.ok for r in run(burst()))  # type: ignore[arg-type]
    assert stub.connections == 8
    stub.mode = "ok"
    run(burst())  # type: ignore[arg-type]
    assert stub.connections == 12, "four kept, four new; the pool holds at most max_idle"


def test_a_base_url_with_a_path_prefix(stub: StubRecommender, run: Run) -> None:
    reply = run(Upstream().recommend(stub.url + "/v1", 5, 0.5))
    assert stub.paths == ["/v1/recommend/5"]
    assert reply.reason is None or reply.reason == "invalid_body"  # the stub reads the last part
