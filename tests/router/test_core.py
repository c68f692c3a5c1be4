"""The routing core with a fake upstream: failover order, reasons, interleaving, shadow."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import pytest

from services.common.events import parse
from services.router.config import Experiment
from services.router.core import Budget, Router
from services.router.exposures import ExposureLog
from services.router.metrics import RouterMetrics
from services.router.upstream import Reply
from tests.router.conftest import FALLBACK, experiment
from tests.router.fake_kafka import FakeProducer
from tests.router.stub import items_for

URLS = {"control": "http://control", "treatment": "http://treatment"}


class FakeUpstream:
    """Answers per URL: a list, or a failure reason set in ``fail``."""

    def __init__(self) -> None:
        self.fail: dict[str, str] = {}
        self.calls: list[tuple[str, int, float]] = []

    async def recommend(
        self, base_url: str, user_id: int, budget_s: float, request_id: str | None = None
    ) -> Reply:
        self.calls.append((base_url, user_id, budget_s))
        name = base_url.removeprefix("http://")
        if name in self.fail:
            return Reply(reason=self.fail[name], seconds=0.001)
        headers = {"X-Model-Name": name, "X-Model-Version": f"{name}-v1"}
        return Reply(items=tuple(items_for(name, user_id)), headers=headers, seconds=0.001)


class Sink:
    """An exposure log that keeps events in a list."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    def record(self, event: Any) -> bool:
        self.events.append(event)
        return True


T = TypeVar("T")
_runner: asyncio.Runner | None = None


@pytest.fixture(autouse=True)
def event_loop_runner() -> Iterator[None]:
    """One event loop per test: the router's shadow tasks outlive the request they copy."""
    global _runner
    _runner = asyncio.Runner()
    yield
    _runner.close()
    _runner = None


def run(coro: Coroutine[Any, Any, T]) -> T:
    assert _runner is not None
    return _runner.run(coro)


def route(router: Router, user_id: int) -> Any:
    return run(router.route(user_id))


def make(upstream: FakeUpstream, **overrides: Any) -> tuple[Router, Sink, RouterMetrics]:
    metrics, sink = RouterMetrics(), Sink()
    cfg = Experiment.model_validate(experiment(URLS, **overrides))
    router = Router(
        cfg,
        upstream,  # type: ignore[arg-type]
        metrics,
        sink,  # type: ignore[arg-type]
        budget=Budget(0.2, 0.4),
        breaker_failures=3,
        rng=random.Random(1),
    )
    return router, sink, metrics


def value(metrics: RouterMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def user_on(router: Router, arm: str) -> int:
    return next(u for u in range(1, 1000) if router.plan.assigner.assign(u).label == arm)


def test_the_assigned_arm_serves_with_its_provenance() -> None:
    up = FakeUpstream()
    router, sink, metrics = make(up)
    user = user_on(router, "treatment")
    answer = route(router, user)
    assert answer.served_by == "treatment" and answer.fallback is None
    assert list(answer.items) == items_for("treatment", user)
    assert answer.model == ("treatment", "treatment-v1")
    assert [c[0] for c in up.calls] == ["http://treatment"]
    (event,) = sink.events
    assert (event.arm, event.model_version, event.fallback) == ("treatment", "treatment-v1", None)
    assert event.items == answer.items and event.status == 200
    assert value(metrics, "marquee_router_assignments_total", experiment="exp-1",
                 arm="treatment") == 1  # fmt: skip


@pytest.mark.parametrize("reason", ["timeout", "connect_error", "status_5xx", "invalid_body"])
def test_a_failing_arm_falls_back_to_control_then_to_the_static_list(reason: str) -> None:
    up = FakeUpstream()
    router, sink, metrics = make(up)
    user = user_on(router, "treatment")
    up.fail["treatment"] = reason
    answer = route(router, user)
    assert (answer.served_by, answer.fallback, answer.label) == ("control", reason, "treatment")
    assert list(answer.items) == items_for("control", user)
    assert sink.events[-1].model_name == "control" and sink.events[-1].fallback == reason
    up.fail["control"] = "timeout"
    answer = route(router, user)
    assert (answer.served_by, answer.fallback, list(answer.items)) == ("static", reason, FALLBACK)
    assert sink.events[-1].model_name is None and sink.events[-1].status == 200
    assert value(metrics, "marquee_router_fallbacks_total", arm="treatment", reason=reason,
                 served_by="control") == 1  # fmt: skip
    assert value(metrics, "marquee_router_fallbacks_total", arm="treatment", reason=reason,
                 served_by="static") == 1  # fmt: skip


def test_control_failing_goes_straight_to_the_static_list() -> None:
    up = FakeUpstream()
    router, _, _ = make(up)
    up.fail["control"] = "status_5xx"
    answer = route(router, user_on(router, "control"))
    assert answer.served_by == "static" and answer.fallback == "status_5xx"
    assert len(up.calls) == 1


def test_an_open_circuit_skips_the_dead_arm() -> None:
    up = FakeUpstream()
    router, _, metrics = make(up)
    user = user_on(router, "treatment")
    up.fail["treatment"] = "connect_error"
    for _ in range(3):
        route(router, user)
    calls = len(up.calls)
    answer = route(router, user)
    assert answer.fallback == "circuit_open" and answer.served_by == "control"
    assert [c[0] for c in up.calls[calls:]] == ["http://control"], "the dead arm is not called"
    assert value(metrics, "marquee_router_circuit_state", arm="treatment") == 2


def test_budgets_limit_each_call_and_the_whole_request() -> None:
    class Slow(FakeUpstream):
        async def recommend(self, base_url: str, user_id: int, budget_s: float,
                            request_id: str | None = None) -> Reply:  # fmt: skip
            await asyncio.sleep(0.15)
            await super().recommend(base_url, user_id, budget_s)
            return Reply(reason="timeout", seconds=0.15)

    up = Slow()
    router, _, _ = make(up)
    route(router, user_on(router, "treatment"))
    (first, _, b1), (second, _, b2) = up.calls
    assert (first, second) == ("http://treatment", "http://control")
    assert b1 == pytest.approx(0.2) and b2 < 0.4 - 0.15 + 0.01


def test_unexposed_users_are_served_by_control_and_labelled() -> None:
    up = FakeUpstream()
    router, sink, _ = make(up, exposure=0.0)
    answer = route(router, 5)
    assert answer.label == "unexposed" and answer.served_by == "control"
    assert sink.events[-1].arm == "unexposed"


def test_interleaving_asks_both_arms_and_tags_every_item() -> None:
    up = FakeUpstream()
    router, sink, _ = make(up, mode="interleave")
    answer = route(router, 77)
    assert answer.label == "interleave" and answer.fallback is None
    assert answer.item_arms is not None and set(answer.item_arms) == {"control", "treatment"}
    both = set(items_for("control", 77)) | set(items_for("treatment", 77))
    assert len(answer.items) == 20 and set(answer.items) <= both
    for item, arm in zip(answer.items, answer.item_arms, strict=True):
        assert item in items_for(arm, 77)
    line = sink.events[-1]
    assert line.item_arms == answer.item_arms and line.model_name == "control"
    up.fail["treatment"] = "timeout"
    answer = route(router, 77)
    assert answer.fallback == "timeout" and set(answer.item_arms or ()) == {"control"}
    assert list(answer.items) == items_for("control", 77)
    up.fail["control"] = "timeout"
    assert route(router, 77).served_by == "static"


def test_shadow_copies_are_measured_never_served() -> None:
    up = FakeUpstream()
    router, _, metrics = make(up, shadow={"url": "http://shadow", "share": 1.0})
    answer = route(router, 9)
    assert answer.served_by in ("control", "treatment")
    run(router.drain())
    assert value(metrics, "marquee_router_shadow_requests_total", outcome="ok") == 1
    assert value(metrics, "marquee_router_shadow_overlap_ratio_count") == 1
    up.fail["shadow"] = "timeout"
    assert route(router, 9).fallback is None, "a failing shadow changes nothing"
    run(router.drain())
    assert value(metrics, "marquee_router_shadow_requests_total", outcome="timeout") == 1
    router.close()


def test_apply_swaps_the_config_and_keeps_circuits_of_unchanged_arms() -> None:
    up = FakeUpstream()
    router, _, metrics = make(up)
    breaker = router.plan.breakers["treatment"]
    router.apply(Experiment.model_validate(experiment(URLS, exposure=0.0, experiment="exp-2")))
    assert router.plan.breakers["treatment"] is breaker
    assert route(router, user_on(router, "unexposed")).experiment == "exp-2"
    assert value(metrics, "marquee_router_arm_weight", experiment="exp-1", arm="treatment") == 0
    assert value(metrics, "marquee_router_arm_weight", experiment="exp-2", arm="treatment") == 50


def test_exposure_events_follow_the_contract() -> None:
    up = FakeUpstream()
    metrics = RouterMetrics()
    producers: list[FakeProducer] = []

    def factory(on_delivery: Any) -> FakeProducer:
        producers.append(FakeProducer(on_delivery))
        return producers[-1]

    log = ExposureLog(factory, "exposures", metrics)
    cfg = Experiment.model_validate(experiment(URLS, mode="interleave"))
    router = Router(cfg, up, metrics, log)  # type: ignore[arg-type]
    route(router, 3)
    up.fail["treatment"] = "status_5xx"
    up.fail["control"] = "timeout"
    route(router, 4)
    log.poll_once()
    first, second = (parse(v) for _, _, v in producers[0].records)
    assert first.kind == "exposure" and first.item_arms is not None  # type: ignore[union-attr]
    assert second.fallback == "timeout" and second.model_name is None  # type: ignore[union-attr]
    assert list(second.items) == FALLBACK  # type: ignore[union-attr]
