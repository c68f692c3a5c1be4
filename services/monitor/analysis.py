"""From counted users to per-arm results and treatment-vs-control comparisons (users as units).

``analyze(state, config)`` turns an ``EvaluationState`` into an ``Analysis``: per arm the users,
conversion (share of users with at least one success) with its interval, the watch rate
(successes per decided list, delta method), watch minutes, ratings and the guardrail inputs;
per treatment arm the fixed-horizon tests, the CUPED-adjusted test, the always-valid test on
the policy's metric, the Bayesian chance to beat control, Holm-adjusted p-values across arms and
metrics; each guardrail against control (error and fallback rates by the delta method over
per-user counts, coverage over requests, latency p99 by its margin and a binomial test); the
sample-ratio check against the configured weights; power and the minimum detectable effect; and,
for interleaved experiments, the per-user preference and sign test.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import stats as sps

from services.common.experiment import INTERLEAVE, Experiment, Policy
from services.monitor import stats
from services.monitor.evaluation import ArmRequests, EvaluationState

__all__ = ["Analysis", "ArmResult", "Comparison", "analyze"]

METRICS = ("conversion", "watch_rate", "watch_minutes")


def _finite(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else v


def _json(obj: Any) -> Any:
    if isinstance(obj, float):
        return _finite(obj)
    if isinstance(obj, dict):
        return {k: _json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json(v) for v in obj]
    return obj


@dataclass
class ArmResult:
    """One arm's users, outcomes and request health."""

    arm: str
    users: int
    converted: int
    conversion: float
    conversion_ci: tuple[float, float]
    lists: int
    successes: int
    watch_rate: float
    watch_minutes: float
    ratings: int
    requests: int
    error_rate: float
    fallback_rate: float
    coverage: float
    latency_p99_ms: float
    switched_users: int
    weight: float


@dataclass
class Comparison:
    """One treatment arm against control."""

    arm: str
    metric: str
    fixed: dict[str, Any]
    """Per metric: the fixed-horizon comparison (``stats.Comparison``) and its Holm p."""
    cuped: dict[str, Any]
    """Per metric (conversion, watch minutes): Welch on values CUPED-adjusted with each user's
    pre-experiment watch minutes, with the share of the estimate's variance removed."""
    sequential: dict[str, Any]
    """The always-valid mSPRT on the policy metric: p (running minimum) and interval."""
    bayes: dict[str, float]
    """Chance to beat control and the expected losses, on the policy metric."""
    power: dict[str, Any]
    """MDE at the current users and power at the planned users."""
    guardrails: dict[str, Any] = field(default_factory=dict)
    """Per guardrail: both arms' values and requests, the margin or threshold, and the
    one-sided p that treatment is worse than control by more than it (``policy.guardrails``)."""


@dataclass
class Analysis:
    """Everything the decision and the reports need, at one evaluation step."""

    experiment: str
    control: str
    edge_ns: int
    pending: int
    arms: list[ArmResult]
    comparisons: list[Comparison]
    srm: dict[str, float]
    unexposed: int
    interleave: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    def arm(self, name: str) -> ArmResult | None:
        """The result of arm ``name`` (None when it has no users yet)."""
        return next((a for a in self.arms if a.arm == name), None)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready mapping (non-finite floats become null)."""
        out: dict[str, Any] = _json(asdict(self))
        return out


def _wald(x: int, n: int, alpha: float) -> tuple[float, float]:
    if n == 0:
        return (0.0, 1.0)
    p = x / n
    h = float(sps.norm.ppf(1 - alpha / 2)) * math.sqrt(p * (1 - p) / n)
    return (p - h, p + h)


def _sel(users: dict[str, npt.NDArray[np.int64]], code: int) -> dict[str, npt.NDArray[np.int64]]:
    mask = users["arm"] == code
    return {k: v[mask] for k, v in users.items()}


def analyze(state: EvaluationState, config: Experiment, pending: int = 0) -> Analysis:
    """Per-arm results and comparisons of ``state`` under ``config``."""
    policy = config.policy or Policy()
    alpha = policy.alpha
    users = state.users
    weights = {a.name: a.weight for a in config.arms}
    per: dict[str, dict[str, npt.NDArray[np.int64]]] = {}
    results: list[ArmResult] = []
    names = [a.name for a in config.arms] if config.mode != "interleave" else [INTERLEAVE]
    for extra in state.arms:
        if extra not in names:
            names.append(extra)
    for name in names:
        code = state.arms.index(name) if name in state.arms else -1
        u = _sel(users, code)
        per[name] = u
        n = int(u["user_id"].size)
        conv = int((u["successes"] > 0).sum())
        req = state.requests.get(name, ArmRequests())
        nreq = max(req.requests, 1)
        lists, succ = int(u["lists"].sum()), int(u["successes"].sum())
        results.append(
            ArmResult(
                arm=name,
                users=n,
                converted=conv,
                conversion=conv / n if n else 0.0,
                conversion_ci=_wald(conv, n, alpha),
                lists=lists,
                successes=succ,
                watch_rate=succ / lists if lists else 0.0,
                watch_minutes=float(u["watch_minutes"].mean()) if n else 0.0,
                ratings=int(u["ratings"].sum()),
                requests=req.requests,
                error_rate=req.errors / nreq if req.requests else 0.0,
                fallback_rate=req.fallbacks / nreq if req.requests else 0.0,
                coverage=(req.requests - req.errors - req.empty) / nreq if req.requests else 0.0,
                latency_p99_ms=req.p99_ms(),
                switched_users=int((u["excluded"] > 0).sum()),
                weight=weights.get(name, 0.0),
            )
        )
    analysis = Analysis(
        experiment=config.experiment,
        control=config.control,
        edge_ns=state.edge_ns,
        pending=pending,
        arms=results,
        comparisons=[],
        srm={},
        unexposed=state.unexposed,
    )
    if config.mode == "interleave":
        analysis.interleave = _interleave(per[INTERLEAVE], config)
        return analysis
    counted = [a for a in config.arms if a.weight > 0]
    chi2, p = stats.srm([per[a.name]["user_id"].size for a in counted], [a.weight for a in counted])
    analysis.srm = {"chi2": chi2, "p_value": p, "alarm": float(p < policy.srm_alpha)}
    analysis.comparisons = _compare(state, config, per, policy)
    return analysis


def _metric_values(u: dict[str, npt.NDArray[np.int64]], metric: str) -> npt.NDArray[np.float64]:
    if metric == "conversion":
        return (u["successes"] > 0).astype(np.float64)
    return u["watch_minutes"].astype(np.float64)


def _compare(
    state: EvaluationState,
    config: Experiment,
    per: dict[str, dict[str, npt.NDArray[np.int64]]],
    policy: Policy,
) -> list[Comparison]:
    alpha = policy.alpha
    ctrl = per[config.control]
    pooled_x = state.users["pre_minutes"].astype(np.float64)
    out: list[Comparison] = []
    fixed_p: list[tuple[int, str, float]] = []
    for arm in config.arms:
        if arm.name == config.control:
            continue
        t = per[arm.name]
        n0, n1 = int(ctrl["user_id"].size), int(t["user_id"].size)
        x0, x1 = int((ctrl["successes"] > 0).sum()), int((t["successes"] > 0).sum())
        fixed = {
            "conversion": stats.two_proportions(x0, n0, x1, n1, alpha).to_json(),
            "watch_rate": stats.delta_ratio(
                stats.ratio_moments(ctrl["successes"], ctrl["lists"]),
                stats.ratio_moments(t["successes"], t["lists"]),
                alpha,
            ).to_json(),
            "watch_minutes": stats.welch(
                stats.moments(ctrl["watch_minutes"]), stats.moments(t["watch_minutes"]), alpha
            ).to_json(),
        }
        for m in METRICS:
            fixed_p.append((len(out), m, fixed[m]["p_value"]))
        metric = policy.metric
        cuped = {
            m: _cuped(
                _metric_values(ctrl, m),
                _metric_values(t, m),
                ctrl["pre_minutes"],
                t["pre_minutes"],
                pooled_x,
                alpha,
            )
            for m in ("conversion", "watch_minutes")
        }
        if metric == "conversion":
            main = stats.two_proportions(x0, n0, x1, n1, alpha)
            variance = main.se**2
            y = np.concatenate([_metric_values(ctrl, metric), _metric_values(t, metric)])
            raw_var = float(np.var(y, ddof=1)) if y.size > 1 else 0.0
            sd = math.sqrt(raw_var) if raw_var > 0 else 0.5
        else:
            main = stats.delta_ratio(
                stats.ratio_moments(ctrl["successes"], ctrl["lists"]),
                stats.ratio_moments(t["successes"], t["lists"]),
                alpha,
            )
            variance = main.se**2
            sd = main.se * math.sqrt(max(min(n0, n1), 1) / 2) if math.isfinite(main.se) else 0.5
        key = arm.name
        seq = stats.msprt(
            main.diff,
            variance,
            policy.mixture_sd,
            alpha,
            previous_p=state.sequential_p.get(key, 1.0),
        )
        chance, loss_t, loss_c = stats.bayes_normal(main.diff, main.se)
        n_min = max(min(n0, n1), 1)
        pw: dict[str, Any] = {"sd": sd, "mde_now": stats.mde(sd, n_min, alpha)}
        if policy.max_users:
            pw["planned_users"] = policy.max_users
            pw["mde_planned"] = stats.mde(sd, policy.max_users, alpha)
        out.append(
            Comparison(
                arm=arm.name,
                metric=metric,
                fixed=fixed,
                cuped=cuped,
                sequential={**seq.to_json(), "diff": main.diff},
                bayes={"chance_to_beat": chance, "loss_treatment": loss_t, "loss_control": loss_c},
                power=pw,
                guardrails=_guardrails(
                    ctrl,
                    t,
                    state.requests.get(config.control, ArmRequests()),
                    state.requests.get(arm.name, ArmRequests()),
                    policy,
                ),
            )
        )
    adjusted = stats.holm([p for _, _, p in fixed_p])
    for (i, m, _), adj in zip(fixed_p, adjusted, strict=True):
        out[i].fixed[m]["p_holm"] = adj
    return out


def _guardrails(
    ctrl: dict[str, npt.NDArray[np.int64]],
    t: dict[str, npt.NDArray[np.int64]],
    rc: ArmRequests,
    rt: ArmRequests,
    policy: Policy,
) -> dict[str, Any]:
    """Each guardrail of treatment ``t`` against control ``ctrl`` (see ``Guardrails``)."""
    g = policy.guardrails
    out: dict[str, Any] = {}
    for name, col, margin in (
        ("error_rate", "errors", g.error_rate_margin),
        ("fallback_rate", "fallbacks", g.fallback_rate_margin),
    ):
        # Users are the unit: a user's requests are not independent (one slow session).
        c = stats.delta_ratio(
            stats.ratio_moments(ctrl[col], ctrl["exposures"]),
            stats.ratio_moments(t[col], t["exposures"]),
        )
        z, p = stats.exceeds_margin(c.diff, c.se, margin)
        out[name] = {"control": c.control, "treatment": c.treatment, "diff": c.diff, "se": c.se,
                     "margin": margin, "z": z, "p_value": p}  # fmt: skip
    # Coverage by request (no per-user count of empty lists): the shortfall is the excess of
    # uncovered requests.
    cov = stats.two_proportions_margin(
        rc.errors + rc.empty, rc.requests, rt.errors + rt.empty, rt.requests, g.coverage_margin
    )
    out["coverage"] = {"control": 1 - cov.control, "treatment": 1 - cov.treatment,
                       "diff": -cov.diff, "se": cov.se, "margin": g.coverage_margin,
                       "z": cov.stat, "p_value": cov.p_value}  # fmt: skip
    p99_c, p99_t = rc.p99_ms(), rt.p99_ms()
    threshold = max(p99_c * g.latency_p99_ratio, p99_c + g.latency_p99_margin_ms)
    n_t = int(rt.latency.sum())
    above = int(rt.latency[math.floor(threshold) + 1 :].sum())
    out["latency_p99_ms"] = {
        "control": p99_c,
        "treatment": p99_t,
        "diff": p99_t - p99_c,
        "threshold": threshold,
        "share_above": above / n_t if n_t else 0.0,
        "p_value": stats.share_above(above, n_t, 0.01),
    }
    for v in out.values():
        v["requests"], v["control_requests"] = rt.requests, rc.requests
    return out


def _cuped(
    y0: npt.NDArray[np.float64],
    y1: npt.NDArray[np.float64],
    x0: npt.NDArray[np.int64],
    x1: npt.NDArray[np.int64],
    pooled_x: npt.NDArray[np.float64],
    alpha: float,
) -> dict[str, Any]:
    """Welch's test on CUPED-adjusted values, and how much the estimate's variance shrank."""
    if y0.size < 2 or y1.size < 2:
        return {}
    theta = stats.cuped_theta(np.concatenate([y0, y1]), np.concatenate([x0, x1]))
    xm = float(pooled_x.mean())
    a0 = stats.cuped_adjust(y0, x0, theta, xm)
    a1 = stats.cuped_adjust(y1, x1, theta, xm)
    cu = stats.welch(stats.moments(a0), stats.moments(a1), alpha)
    raw = float(np.var(y0, ddof=1) / y0.size + np.var(y1, ddof=1) / y1.size)
    adj = float(np.var(a0, ddof=1) / a0.size + np.var(a1, ddof=1) / a1.size)
    return {**cu.to_json(), "theta": theta, "variance_reduction": 1 - adj / raw if raw > 0 else 0.0}


def _interleave(u: dict[str, npt.NDArray[np.int64]], config: Experiment) -> dict[str, Any]:
    a = config.control
    b = next(arm.name for arm in config.arms if arm.name != a)
    ca = u.get(f"credit:{a}", np.zeros(u["user_id"].size, np.int64))
    cb = u.get(f"credit:{b}", np.zeros(u["user_id"].size, np.int64))
    wins, losses = int((cb > ca).sum()), int((ca > cb).sum())
    return {
        "control": config.control,
        "arms": [a, b],
        "users": int(u["user_id"].size),
        "prefer": {b: wins, a: losses},
        "ties": int((ca == cb).sum()),
        "credits": {a: int(ca.sum()), b: int(cb.sum())},
        "p_value": stats.sign_test(wins, losses),
    }
