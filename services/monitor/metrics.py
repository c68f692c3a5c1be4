"""Prometheus metrics of the monitor (``marquee_monitor_*``; arms and experiments as labels)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

disable_created_metrics()  # type: ignore[no-untyped-call]

USERS = Gauge("marquee_monitor_arm_users", "Users counted per arm", ["experiment", "arm"])
CONVERSION = Gauge(
    "marquee_monitor_arm_conversion",
    "Share of an arm's users with a success, with its confidence bounds",
    ["experiment", "arm", "bound"],
)
WATCH_RATE = Gauge(
    "marquee_monitor_arm_watch_rate", "Successes per decided served list", ["experiment", "arm"]
)
GUARDRAIL = Gauge(
    "marquee_monitor_arm_guardrail",
    "Guardrail inputs per arm: error_rate, fallback_rate, latency_p99_seconds, coverage",
    ["experiment", "arm", "name"],
)
P_VALUE = Gauge(
    "marquee_monitor_p_value",
    "p-values of treatment vs control: fixed (per metric), holm, sequential (always valid)",
    ["experiment", "arm", "metric", "test"],
)
CHANCE = Gauge(
    "marquee_monitor_chance_to_beat_control",
    "Bayesian chance to beat control",
    ["experiment", "arm"],
)
SEQUENTIAL = Gauge(
    "marquee_monitor_sequential_bound",
    "Confidence sequence of the difference on the policy metric (low, high) and the estimate",
    ["experiment", "arm", "bound"],
)
SRM_P = Gauge("marquee_monitor_srm_p_value", "Sample-ratio-mismatch chi-square p", ["experiment"])
DECISION = Gauge(
    "marquee_monitor_decision_state", "1 for the latest decision's action", ["experiment", "action"]
)
DECISIONS = Counter(
    "marquee_monitor_decisions_total",
    "Decisions other than continue",
    ["experiment", "action", "mode"],
)
LAG = Gauge(
    "marquee_monitor_evaluation_lag_seconds",
    "Event time between the stream head and the last judged exposure (window + lateness + lag)",
    ["experiment"],
)
PENDING = Gauge(
    "marquee_monitor_pending_exposures", "Exposures whose window is still open", ["experiment"]
)
EVENT_TIME = Gauge(
    "marquee_monitor_judged_until_seconds",
    "Event time (Unix seconds) up to which exposures are judged",
    ["experiment"],
)
STEPS = Counter("marquee_monitor_steps_total", "Evaluation steps", ["outcome"])
STEP_SECONDS = Histogram(
    "marquee_monitor_step_seconds",
    "Wall time of one evaluation step",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
