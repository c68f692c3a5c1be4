"""The decision: continue, ramp, promote, roll back, or stop -- each with its reason and numbers.

``decide(config, analysis, marks)`` is a pure function of the experiment config (its
``policy``), the current analysis and the users per arm at the last config change
(``marks``); it returns a ``Decision`` naming the new config, if any, and the registry moves.
The order of checks is the order of urgency:

1. an experiment that is not running is left alone;
2. a sample-ratio mismatch (chi-square p < ``srm_alpha``) stops it: its numbers cannot be
   trusted, whoever looks better;
3. a broken guardrail rolls the arm back at once, before any statistics mature: a treatment
   arm's error or fallback rate, latency p99 or coverage worse than control's by more than a
   margin (one-sided test; a problem both arms share rolls nothing back), or beyond an absolute
   backstop limit;
4. with ``min_users`` per arm, the always-valid test (Holm across treatment arms) promotes a
   significantly better arm or rolls back a worse one;
5. ``max_users`` reached without a verdict stops the experiment in favour of control;
6. otherwise the exposure is ramped to the next step once ``ramp_min_users`` more users per
   arm have been seen at the current one, or the experiment simply continues.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from services.common.experiment import Experiment, Policy, Status
from services.monitor import stats
from services.monitor.analysis import Analysis

__all__ = ["Action", "Decision", "RegistryMove", "decide"]

MIN_SRM_USERS = 100
"""Users before the sample-ratio check may stop anything (a tiny sample is all noise)."""


class Action(StrEnum):
    """What the monitor does to an experiment."""

    CONTINUE = "continue"
    RAMP = "ramp"
    PROMOTE = "promote"
    ROLLBACK = "rollback"
    STOP_SRM = "stop_srm"
    STOP_INCONCLUSIVE = "stop_inconclusive"


@dataclass(frozen=True)
class RegistryMove:
    """A registry channel move: ``promote`` a version to a channel, or ``rollback`` one."""

    op: str
    model: str
    channel: str
    version: str | None = None


@dataclass
class Decision:
    """One decision with its reason, the numbers behind it and what it changes."""

    experiment: str
    action: Action
    reason: str
    numbers: dict[str, Any] = field(default_factory=dict)
    config: Experiment | None = None
    """The config to write (None: leave it)."""
    registry: list[RegistryMove] = field(default_factory=list)
    arm: str | None = None

    @property
    def changes(self) -> bool:
        """True when the decision rewrites the config or moves the registry."""
        return self.config is not None or bool(self.registry)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready summary (the new config by its changed fields)."""
        out: dict[str, Any] = {
            "experiment": self.experiment,
            "action": str(self.action),
            "reason": self.reason,
            "arm": self.arm,
            "numbers": _clean(self.numbers),
            "registry": [m.__dict__ for m in self.registry],
        }
        if self.config is not None:
            out["config"] = {
                "status": str(self.config.status),
                "exposure": self.config.exposure,
                "winner": self.config.winner,
            }
        return out


def _clean(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    return obj


def _with(config: Experiment, **changes: Any) -> Experiment:
    return Experiment.model_validate({**config.model_dump(), **changes})


_WORSE = {"error_rate": "higher", "fallback_rate": "higher", "coverage": "lower"}


def _guardrail(
    analysis: Analysis, config: Experiment, policy: Policy
) -> tuple[str, str, dict[str, Any]] | None:
    """The first broken guardrail of a treatment arm: (arm, reason, numbers), or None.

    A backstop (absolute limit on the treatment arm alone) first, then the comparison with
    control: worse by more than the margin, with one-sided p < ``guardrails.alpha``.
    """
    g = policy.guardrails
    ctrl = analysis.arm(config.control)
    comps = {c.arm: c for c in analysis.comparisons}
    for arm in analysis.arms:
        if arm.arm == config.control or arm.requests < g.min_requests:
            continue
        ceilings = [
            ("error_rate", arm.error_rate, g.max_error_rate, arm.error_rate > g.max_error_rate),
            (
                "fallback_rate",
                arm.fallback_rate,
                g.max_fallback_rate,
                arm.fallback_rate > g.max_fallback_rate,
            ),
            (
                "latency_p99_ms",
                arm.latency_p99_ms,
                g.max_latency_p99_ms,
                arm.latency_p99_ms > g.max_latency_p99_ms,
            ),
            ("coverage", arm.coverage, g.min_coverage, arm.coverage < g.min_coverage),
        ]
        for name, value, limit, broken in ceilings:
            if broken:
                c_value = getattr(ctrl, name) if ctrl is not None else math.nan
                c_req = ctrl.requests if ctrl is not None else 0
                return (
                    arm.arm,
                    f"guardrail {name} of arm {arm.arm!r} is {value:.4g} against control's"
                    f" {c_value:.4g}, beyond the absolute limit {limit:.4g}"
                    f" (over {arm.requests} and {c_req} requests)",
                    {"guardrail": name, "check": "limit", "value": value, "treatment": value,
                     "control": c_value, "limit": limit, "requests": arm.requests,
                     "control_requests": c_req},
                )  # fmt: skip
        comp = comps.get(arm.arm)
        if ctrl is None or comp is None or ctrl.requests < g.min_requests:
            continue
        for name, gr in comp.guardrails.items():
            if name == "latency_p99_ms":
                worse = gr["treatment"] > gr["threshold"]
                how = f"slower than the threshold {gr['threshold']:.4g} ms"
            else:
                excess = gr["diff"] if name != "coverage" else -gr["diff"]
                worse = excess > gr["margin"]
                how = f"{_WORSE[name]} by more than the margin {gr['margin']:.4g}"
            if worse and gr["p_value"] < g.alpha:
                return (
                    arm.arm,
                    f"guardrail {name} of arm {arm.arm!r} is {gr['treatment']:.4g} against"
                    f" control's {gr['control']:.4g}: {how},"
                    f" one-sided p = {gr['p_value']:.3g} < {g.alpha:g}"
                    f" (over {gr['requests']} and {gr['control_requests']} requests)",
                    {"guardrail": name, "check": "vs_control", "value": gr["treatment"]}
                    | {k: v for k, v in gr.items() if k != "z"},
                )
    return None


def _moves(config: Experiment, arm_name: str, op: str, policy: Policy) -> list[RegistryMove]:
    arm = config.arm(arm_name)
    if arm.model is None:
        return []
    if op == "promote":
        return [RegistryMove("promote", arm.model, policy.promote_to, arm.channel)]
    if arm.channel is None or arm.channel == policy.promote_to:
        return []
    return [RegistryMove("rollback", arm.model, arm.channel)]


def decide(
    config: Experiment, analysis: Analysis, marks: dict[str, float] | None = None
) -> Decision:
    """The decision for ``config`` given ``analysis``; see the module's order of checks."""
    policy = config.policy or Policy()
    marks = marks or {}
    name = config.experiment
    if config.status is not Status.RUNNING:
        return Decision(name, Action.CONTINUE, f"experiment is {config.status}; nothing to do")
    if config.mode == "interleave":
        il = analysis.interleave or {}
        return Decision(
            name,
            Action.CONTINUE,
            "interleaving experiments are reported, not acted on",
            {"p_value": il.get("p_value"), "prefer": il.get("prefer")},
        )
    users = {a.arm: a.users for a in analysis.arms}
    total = sum(users.values())
    srm_p = analysis.srm.get("p_value", 1.0)
    if total >= MIN_SRM_USERS and srm_p < policy.srm_alpha:
        counts = {a.arm: a.users for a in analysis.arms if a.weight > 0}
        weights = {a.arm: a.weight for a in analysis.arms if a.weight > 0}
        return Decision(
            name,
            Action.STOP_SRM,
            f"sample ratio mismatch: users {counts} against weights {weights},"
            f" chi-square p = {srm_p:.3g} < {policy.srm_alpha:g}",
            {"srm_p": srm_p, "chi2": analysis.srm.get("chi2"), "users": counts, "weights": weights},
            config=_with(config, status=Status.PAUSED),
        )
    broken = _guardrail(analysis, config, policy)
    if broken is not None:
        arm, reason, numbers = broken
        return Decision(
            name,
            Action.ROLLBACK,
            reason,
            numbers,
            config=_with(config, status=Status.ROLLED_BACK),
            registry=_moves(config, arm, "rollback", policy),
            arm=arm,
        )
    comps = analysis.comparisons
    adj = stats.holm([float(c.sequential["p_value"]) for c in comps])
    enough = all(users.get(a.name, 0) >= policy.min_users for a in config.arms if a.weight > 0)
    summary = {
        c.arm: {
            "diff": c.sequential["diff"],
            "p_always_valid": p,
            "ci": [c.sequential["ci_low"], c.sequential["ci_high"]],
            "chance_to_beat": c.bayes["chance_to_beat"],
            "users": users.get(c.arm, 0),
            "control_users": users.get(config.control, 0),
        }
        for c, p in zip(comps, adj, strict=True)
    }
    if enough and comps:
        better = [
            (c, p)
            for c, p in zip(comps, adj, strict=True)
            if p < policy.alpha and c.sequential["diff"] > 0
        ]
        worse = [
            (c, p)
            for c, p in zip(comps, adj, strict=True)
            if p < policy.alpha and c.sequential["diff"] < 0
        ]
        if better:
            c, p = max(better, key=lambda cp: cp[0].sequential["diff"])
            return Decision(
                name,
                Action.PROMOTE,
                f"arm {c.arm!r} beats {config.control!r} on {c.metric}: difference"
                f" {c.sequential['diff']:+.4f}, always-valid p = {p:.3g} < {policy.alpha:g}",
                summary[c.arm] | {"metric": c.metric},
                config=_with(config, status=Status.PROMOTED, winner=c.arm),
                registry=_moves(config, c.arm, "promote", policy),
                arm=c.arm,
            )
        if len(worse) == len(comps):
            c, p = min(worse, key=lambda cp: cp[0].sequential["diff"])
            return Decision(
                name,
                Action.ROLLBACK,
                f"arm {c.arm!r} is worse than {config.control!r} on {c.metric}: difference"
                f" {c.sequential['diff']:+.4f}, always-valid p = {p:.3g} < {policy.alpha:g}",
                summary[c.arm] | {"metric": c.metric},
                config=_with(config, status=Status.ROLLED_BACK),
                registry=[m for w, _ in worse for m in _moves(config, w.arm, "rollback", policy)],
                arm=c.arm,
            )
    least = min((users.get(a.name, 0) for a in config.arms if a.weight > 0), default=0)
    if policy.max_users is not None and least >= policy.max_users:
        return Decision(
            name,
            Action.STOP_INCONCLUSIVE,
            f"planned {policy.max_users} users per arm reached without a significant"
            " difference; control stays",
            {"arms": summary},
            config=_with(config, status=Status.ROLLED_BACK),
        )
    steps = [s for s in policy.ramp if s > config.exposure + 1e-12]
    since = least - int(marks.get("users_at_change", 0))
    if steps and since >= policy.ramp_min_users:
        return Decision(
            name,
            Action.RAMP,
            f"{since} new users per arm at exposure {config.exposure:g} with guardrails"
            f" fine: exposure {config.exposure:g} -> {steps[0]:g}",
            {"from": config.exposure, "to": steps[0], "users": users},
            config=_with(config, exposure=steps[0]),
        )
    why = "collecting users" if not enough else "no significant difference yet"
    return Decision(name, Action.CONTINUE, why, {"arms": summary, "users": users})
