"""The routing core: assign, ask the arm, fail over, interleave, shadow, record. No HTTP server.

``await Router.route(user_id)`` always returns a servable ``Answer``: the assigned arm's list,
else the control arm's, else the config's static list, each fallback counted with its reason.
It runs on the serving event loop: upstream calls are awaited, never block a thread.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from dataclasses import dataclass, field

from services.common.events import ExposureEvent
from services.router.assignment import Assigner, Assignment
from services.router.config import Experiment
from services.router.exposures import ExposureLog
from services.router.interleave import team_draft
from services.router.metrics import CIRCUIT_STATES, RouterMetrics
from services.router.upstream import CircuitBreaker, Reply, Upstream

log = logging.getLogger("marquee.router.core")

STATIC = "static"


@dataclass(frozen=True)
class Answer:
    """What the router serves one user and records about it."""

    experiment: str
    label: str
    """Arm label recorded: an arm name, ``unexposed`` or ``interleave``."""
    served_by: str
    """The arm whose list is served (for interleaving, the arms joined by ``+``), or ``static``."""
    items: tuple[str, ...]
    item_arms: tuple[str, ...] | None
    fallback: str | None
    """Why the assigned arm's list was not served (the first failure), else None."""
    headers: dict[str, str] = field(default_factory=dict)
    """The serving answer's ``X-Model-*`` headers."""
    model: tuple[str | None, str | None] = (None, None)

    def body(self) -> str:
        """The contract's one line: ids joined by commas."""
        return ",".join(self.items)


@dataclass(frozen=True)
class Budget:
    """Time limits of one request's upstream calls."""

    per_call_s: float = 0.2
    total_s: float = 0.4


class _Plan:
    """One config with everything derived from it, swapped as a whole on reload."""

    def __init__(self, config: Experiment, breakers: dict[tuple[str, str], CircuitBreaker]):
        self.config = config
        self.assigner = Assigner(config)
        self.urls = {a.name: a.url for a in config.arms}
        self.breakers = {a.name: breakers[(a.name, a.url)] for a in config.arms}


class Router:
    """Routes requests under the config in force; ``apply(config)`` swaps a new one in."""

    def __init__(
        self,
        config: Experiment,
        upstream: Upstream,
        metrics: RouterMetrics,
        exposures: ExposureLog | None = None,
        *,
        budget: Budget | None = None,
        breaker_failures: int = 5,
        breaker_cooldown_s: float = 5.0,
        shadow_max_in_flight: int = 4,
        rng: random.Random | None = None,
    ) -> None:
        self.upstream = upstream
        self.metrics = metrics
        self.exposures = exposures
        self.budget = budget or Budget()
        self._breaker_args = (breaker_failures, breaker_cooldown_s)
        self._breakers: dict[tuple[str, str], CircuitBreaker] = {}
        self._rng = rng or random.Random()
        self._lock = threading.Lock()  # apply() runs on the config watcher's thread
        self._shadow_max = shadow_max_in_flight
        self._shadows: set[asyncio.Task[None]] = set()
        self.plan = self._build(config)
        self._publish(config)

    # --- configuration ----------------------------------------------------------------------

    def _build(self, config: Experiment) -> _Plan:
        with self._lock:
            for arm in config.arms:
                key = (arm.name, arm.url)
                if key not in self._breakers:  # an unchanged arm keeps its circuit state
                    self._breakers[key] = CircuitBreaker(*self._breaker_args)
            return _Plan(config, self._breakers)

    def apply(self, config: Experiment) -> None:
        """Serve ``config`` from now on (one reference swap: running requests keep theirs)."""
        old = self.plan.config
        self.plan = self._build(config)
        self._publish(config, old)

    def _publish(self, config: Experiment, old: Experiment | None = None) -> None:
        m = self.metrics
        if old is not None:
            for arm in old.arms:
                m.weight.labels(old.experiment, arm.name).set(0)
            m.exposure_share.labels(old.experiment, str(old.status)).set(0)
        for arm in config.arms:
            m.weight.labels(config.experiment, arm.name).set(arm.weight)
            m.circuit.labels(arm.name).set(0)
        share = config.exposure if config.status == "running" else 0.0
        m.exposure_share.labels(config.experiment, str(config.status)).set(share)

    # --- serving ----------------------------------------------------------------------------

    async def route(
        self, user_id: int, request_id: str | None = None, at_ns: int | None = None
    ) -> Answer:
        """Answer ``user_id`` under the current config; never raises for upstream trouble.

        ``at_ns``: the exposure's time (a trusted simulated clock); the wall clock when None.
        """
        started = time.perf_counter()
        plan = self.plan  # read once: a reload cannot change the config under this request
        config = plan.config
        a = plan.assigner.assign(user_id)
        m = self.metrics
        m.hot(m.assignments, config.experiment, a.label).inc()
        deadline = started + self.budget.total_s
        if len(a.arms) == 2:
            answer = await self._interleaved(plan, a, user_id, deadline, request_id)
        else:
            answer = await self._single(plan, a, user_id, deadline, request_id)
        if a.shadow and config.shadow is not None:
            self._shadow(config.shadow.url, user_id, answer.items)
        seconds = time.perf_counter() - started
        m.hot(m.requests, answer.label, "200").inc()
        m.hot(m.latency, answer.label).observe(seconds)
        if self.exposures is not None:
            self.exposures.record(self.exposure_event(answer, user_id, seconds, at_ns))
        return answer

    @staticmethod
    def exposure_event(
        answer: Answer, user_id: int, seconds: float, at_ns: int | None = None
    ) -> ExposureEvent:
        """The contract's exposure event for ``answer`` (time in whole milliseconds)."""
        now_ns = (time.time_ns() if at_ns is None else at_ns) // 1_000_000 * 1_000_000
        name, version = answer.model
        return ExposureEvent(
            now_ns,
            user_id,
            answer.experiment,
            answer.label,
            name,
            version,
            200,
            int(seconds * 1000),
            answer.fallback,
            answer.items,
            answer.item_arms,
            3,
        )

    async def _call(
        self, plan: _Plan, arm: str, user_id: int, deadline: float, request_id: str | None
    ) -> Reply:
        m = self.metrics
        breaker = plan.breakers[arm]
        if not breaker.allow():
            m.hot(m.circuit, arm).set(CIRCUIT_STATES["open"])
            return Reply(reason="circuit_open")
        budget = min(self.budget.per_call_s, deadline - time.perf_counter())
        reply = await self.upstream.recommend(plan.urls[arm], user_id, budget, request_id)
        breaker.record(reply.ok)
        m.hot(m.upstream_latency, arm, reply.reason or "ok").observe(reply.seconds)
        m.hot(m.circuit, arm).set(CIRCUIT_STATES[breaker.state])
        return reply

    def _fallback(self, arm: str, reason: str, served_by: str) -> None:
        self.metrics.fallbacks.labels(arm, reason, served_by).inc()
        log.info("fallback", extra={"arm": arm, "fallback_reason": reason, "served_by": served_by})

    def _static(self, config: Experiment, label: str, reason: str) -> Answer:
        return Answer(config.experiment, label, STATIC, tuple(config.fallback), None, reason)

    async def _single(
        self, plan: _Plan, a: Assignment, user_id: int, deadline: float, rid: str | None
    ) -> Answer:
        config = plan.config
        arm = a.arms[0]
        reply = await self._call(plan, arm, user_id, deadline, rid)
        if reply.ok:
            return Answer(
                config.experiment, a.label, arm, reply.items, None, None, reply.headers, reply.model
            )
        reason = reply.reason or "error"
        if arm != config.control:
            second = await self._call(plan, config.control, user_id, deadline, rid)
            if second.ok:
                self._fallback(arm, reason, config.control)
                return Answer(
                    config.experiment,
                    a.label,
                    config.control,
                    second.items,
                    None,
                    reason,
                    second.headers,
                    second.model,
                )
        self._fallback(arm, reason, STATIC)
        return self._static(config, a.label, reason)

    async def _interleaved(
        self, plan: _Plan, a: Assignment, user_id: int, deadline: float, rid: str | None
    ) -> Answer:
        config = plan.config
        first, second = a.arms
        # Both arms at once: asking them one after the other would double the latency.
        r1, r2 = await asyncio.gather(
            self._call(plan, first, user_id, deadline, rid),
            self._call(plan, second, user_id, deadline, rid),
        )
        if r1.ok and r2.ok:
            items, teams = team_draft(r1.items, r2.items, (first, second), rng=self._rng)
            control = r1 if first == config.control else r2
            return Answer(
                config.experiment,
                a.label,
                f"{first}+{second}",
                tuple(items),
                tuple(teams),
                None,
                control.headers,
                control.model,
            )
        for arm, ok_reply, bad_arm, bad in ((first, r1, second, r2), (second, r2, first, r1)):
            if ok_reply.ok:
                reason = bad.reason or "error"
                self._fallback(bad_arm, reason, arm)
                return Answer(
                    config.experiment,
                    a.label,
                    arm,
                    ok_reply.items,
                    (arm,) * len(ok_reply.items),
                    reason,
                    ok_reply.headers,
                    ok_reply.model,
                )
        reason = r1.reason or "error"
        self._fallback(first, reason, STATIC)
        self._fallback(second, r2.reason or "error", STATIC)
        return self._static(config, a.label, reason)

    # --- shadow -----------------------------------------------------------------------------

    def _shadow(self, url: str, user_id: int, served: tuple[str, ...]) -> None:
        if len(self._shadows) >= self._shadow_max:
            self.metrics.shadow.labels("shed").inc()
            return
        task = asyncio.get_running_loop().create_task(self._shadow_call(url, user_id, served))
        self._shadows.add(task)  # the loop keeps only a weak reference to a task
        task.add_done_callback(self._shadows.discard)

    async def _shadow_call(self, url: str, user_id: int, served: tuple[str, ...]) -> None:
        reply = await self.upstream.recommend(url, user_id, self.budget.per_call_s)
        self.metrics.shadow.labels(reply.reason or "ok").inc()
        self.metrics.shadow_latency.observe(reply.seconds)
        if reply.ok and served:
            overlap = len(set(served) & set(reply.items)) / len(served)
            self.metrics.shadow_overlap.observe(overlap)

    async def drain(self) -> None:
        """Wait for the shadow copies in flight (tests, and a graceful stop)."""
        if self._shadows:
            await asyncio.gather(*self._shadows, return_exceptions=True)

    def close(self) -> None:
        """Abandon the shadow copies in flight."""
        for task in list(self._shadows):
            task.cancel()
