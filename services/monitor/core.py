"""The monitor's loop body: read, evaluate, analyze, decide, act, record -- one step at a time.

``Monitor.step()`` is plain code (no HTTP, no threads): tests call it directly.  The order of
one step is chosen for crashes: the decision is applied before the checkpoint is written, so a
crash in between re-evaluates the same events against the *new* config on restart (a promoted
or rolled-back experiment is no longer running, so nothing is applied twice); history rows are
keyed by event time, so re-recording a step changes nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa

from services.common.artifacts import Registry
from services.common.experiment import Experiment
from services.monitor import metrics
from services.monitor.actions import Applied, ConfigStore, apply
from services.monitor.analysis import Analysis, analyze
from services.monitor.evaluation import NEG_INF, EvaluationState, Evaluator
from services.monitor.history import History
from services.monitor.policy import Action, Decision, decide

__all__ = ["Monitor", "Source", "StepResult"]

log = logging.getLogger("marquee.monitor")
NS = 1_000_000_000


class Source(Protocol):
    """Events for the evaluator plus how far the data is complete."""

    def read(
        self, kind: str, columns: list[str], since: int | None, until: int | None
    ) -> pa.Table: ...

    def refresh(self) -> None: ...

    def complete_until(self, lateness_ns: int) -> int | None: ...


@dataclass
class StepResult:
    """What one step saw and did."""

    config: Experiment
    analysis: Analysis
    decision: Decision
    applied: Applied
    lag_s: float
    advanced: bool


class Monitor:
    """One experiment's evaluation, decisions and records (the experiment named by the config)."""

    def __init__(
        self,
        source: Source,
        store: ConfigStore,
        *,
        checkpoint_dir: Path,
        history: History | None = None,
        registry: Registry | None = None,
        dry_run: bool = False,
        lateness_ns: int = 60 * NS,
        lookback_ns: int = 7 * 86_400 * NS,
    ) -> None:
        self.source = source
        self.store = store
        self.history = history
        self.registry = registry
        self.dry_run = dry_run
        self.lateness_ns = lateness_ns
        self.lookback_ns = lookback_ns
        self.checkpoint_dir = checkpoint_dir
        self.evaluator: Evaluator | None = None
        self.latest: StepResult | None = None
        self._previous: Analysis | None = None
        self._last_recorded: str | None = None
        self.lock = threading.Lock()

    def _checkpoint(self, experiment: str) -> Path:
        return self.checkpoint_dir / f"{experiment}.parquet"

    def _evaluator(self, experiment: str) -> Evaluator:
        if self.evaluator is None or self.evaluator.state.experiment != experiment:
            path = self._checkpoint(experiment)
            state = EvaluationState.load(path) if path.is_file() else None
            self.evaluator = Evaluator(
                self.source.read, experiment, state=state, lookback_ns=self.lookback_ns
            )
            self._previous = None
        return self.evaluator

    def step(self, until_ns: int | None = None) -> StepResult | None:
        """One evaluation step; None while the stores hold no data yet."""
        started = time.perf_counter()
        self.source.refresh()
        config = self.store.read()
        head = self.source.complete_until(0)
        if until_ns is None:
            until_ns = None if head is None else head - self.lateness_ns
        if until_ns is None:
            metrics.STEPS.labels("no_data").inc()
            return None
        ev = self._evaluator(config.experiment)
        advanced = ev.advance(until_ns)
        st = ev.state
        analysis = analyze(st, config, ev.pending)
        for c in analysis.comparisons:
            st.sequential_p[c.arm] = float(c.sequential["p_value"])
        decision = decide(config, analysis, st.marks)
        applied = apply(decision, self.store, self.registry, dry_run=self.dry_run)
        if applied.config_written:
            users = [a.users for a in analysis.arms if a.weight > 0]
            st.marks["users_at_change"] = float(min(users, default=0))
        if advanced or applied.config_written:
            st.save(self._checkpoint(config.experiment))
        lag_s = (
            ((head if head is not None else until_ns) - st.edge_ns) / NS
            if st.edge_ns != NEG_INF
            else 0.0
        )
        result = StepResult(config, analysis, decision, applied, lag_s, advanced)
        # Published before the history and metrics writes: once a decision is visible in the
        # config, the API already shows the step behind it.
        with self.lock:
            self.latest = result
        self._record(result)
        self._export(result)
        metrics.STEPS.labels("advanced" if advanced else "idle").inc()
        metrics.STEP_SECONDS.observe(time.perf_counter() - started)
        return result

    def _record(self, r: StepResult) -> None:
        if r.decision.action is not Action.CONTINUE:
            metrics.DECISIONS.labels(
                r.config.experiment, str(r.decision.action), "dry_run" if self.dry_run else "act"
            ).inc()
            log.info(
                "decision",
                extra={
                    "experiment": r.config.experiment,
                    "action": str(r.decision.action),
                    "reason": r.decision.reason,
                    "dry_run": self.dry_run,
                },
            )
        if self.history is None:
            return
        if r.advanced:
            self.history.record_step(r.analysis, self._previous, r.lag_s)
            self._previous = r.analysis
        action = str(r.decision.action)
        # Acting decisions are always recorded; a repeated "continue" (or, in dry-run, a
        # repeated would-be action) only when the action changes.
        acting = r.decision.action is not Action.CONTINUE and not self.dry_run
        if acting or action != self._last_recorded:
            self.history.record_decision(
                r.config.experiment,
                r.analysis.edge_ns,
                r.decision.to_json(),
                r.applied.to_json(),
                self.dry_run,
            )
            self._last_recorded = action

    def _export(self, r: StepResult) -> None:
        exp = r.config.experiment
        a = r.analysis
        for arm in a.arms:
            metrics.USERS.labels(exp, arm.arm).set(arm.users)
            metrics.CONVERSION.labels(exp, arm.arm, "estimate").set(arm.conversion)
            metrics.CONVERSION.labels(exp, arm.arm, "low").set(arm.conversion_ci[0])
            metrics.CONVERSION.labels(exp, arm.arm, "high").set(arm.conversion_ci[1])
            metrics.WATCH_RATE.labels(exp, arm.arm).set(arm.watch_rate)
            metrics.GUARDRAIL.labels(exp, arm.arm, "error_rate").set(arm.error_rate)
            metrics.GUARDRAIL.labels(exp, arm.arm, "fallback_rate").set(arm.fallback_rate)
            metrics.GUARDRAIL.labels(exp, arm.arm, "latency_p99_seconds").set(
                arm.latency_p99_ms / 1000
            )
            metrics.GUARDRAIL.labels(exp, arm.arm, "coverage").set(arm.coverage)
        for c in a.comparisons:
            for m, f in c.fixed.items():
                metrics.P_VALUE.labels(exp, c.arm, m, "fixed").set(f["p_value"])
                metrics.P_VALUE.labels(exp, c.arm, m, "holm").set(f.get("p_holm", 1.0))
            metrics.P_VALUE.labels(exp, c.arm, c.metric, "sequential").set(c.sequential["p_value"])
            metrics.CHANCE.labels(exp, c.arm).set(c.bayes["chance_to_beat"])
            for bound in ("ci_low", "ci_high", "diff"):
                v = c.sequential.get(bound)
                if v is not None:
                    metrics.SEQUENTIAL.labels(exp, c.arm, bound).set(v)
        if a.srm:
            metrics.SRM_P.labels(exp).set(a.srm["p_value"])
        for action in Action:
            metrics.DECISION.labels(exp, str(action)).set(float(action is r.decision.action))
        metrics.LAG.labels(exp).set(r.lag_s)
        metrics.PENDING.labels(exp).set(a.pending)
        if a.edge_ns != NEG_INF:
            metrics.EVENT_TIME.labels(exp).set(a.edge_ns / NS)

    def snapshot(self) -> dict[str, Any] | None:
        """The latest step as JSON (for the API and the page)."""
        with self.lock:
            r = self.latest
        if r is None:
            return None
        return {
            "experiment": r.config.experiment,
            "status": str(r.config.status),
            "exposure": r.config.exposure,
            "mode": r.config.mode,
            "control": r.config.control,
            "dry_run": self.dry_run,
            "lag_s": r.lag_s,
            "analysis": r.analysis.to_json(),
            "decision": r.decision.to_json(),
            "applied": r.applied.to_json(),
        }
