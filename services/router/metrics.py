"""Prometheus metrics of the router (``marquee_router_*``), aggregated across gunicorn workers."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.common.metrics import BoundChildren, exposition, multiprocess_enabled

# The router adds well under a millisecond; upstreams take milliseconds; the deadline is 600 ms.
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.45, 0.6, 1.0,
)  # fmt: skip
CIRCUIT_STATES = {"closed": 0, "half_open": 1, "open": 2}


class RouterMetrics:
    """The router's metrics in a registry of their own (safe to build twice in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # ``hot(metric, *labels)``: the serving path's children, bound once
        self.hot = BoundChildren()
        r = self.registry
        self.requests = Counter(
            "marquee_router_requests",
            "Answers to GET /recommend by arm label (unexposed, interleave, an arm) and status.",
            ["arm", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "marquee_router_request_duration_seconds",
            "Time to answer GET /recommend in the app, by arm label.",
            ["arm"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream_latency = Histogram(
            "marquee_router_upstream_duration_seconds",
            "Time of one call to an arm's recommender, by arm and outcome (ok or a reason).",
            ["arm", "outcome"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.assignments = Counter(
            "marquee_router_assignments",
            "Users assigned per request, by arm label: the sample-ratio signal.",
            ["experiment", "arm"],
            registry=r,
        )
        self.fallbacks = Counter(
            "marquee_router_fallbacks",
            "Answers not served by the arm asked, by that arm, reason and what served instead.",
            ["arm", "reason", "served_by"],
            registry=r,
        )
        self.weight = Gauge(
            "marquee_router_arm_weight",
            "Configured weight (percent of exposed users) per arm.",
            ["experiment", "arm"],
            multiprocess_mode="livemax",
            registry=r,
        )
        self.exposure_share = Gauge(
            "marquee_router_exposure_share",
            "Configured share of users exposed to the experiment (0 unless running).",
            ["experiment", "status"],
            multiprocess_mode="livemax",
            registry=r,
        )
        self.circuit = Gauge(
            "marquee_router_circuit_state",
            "Circuit breaker per arm: 0 closed, 1 half open, 2 open (worst worker).",
            ["arm"],
            multiprocess_mode="livemax",
            registry=r,
        )
        self.config_reloads = Counter(
            "marquee_router_config_reloads",
            "Experiment config files seen changed, by result (applied or rejected).",
            ["result"],
            registry=r,
        )
        self.exposures_sent = Counter(
            "marquee_router_exposure_events_sent",
            "Exposure events acknowledged by Kafka.",
            registry=r,
        )
        self.exposures_dropped = Counter(
            "marquee_router_exposure_events_dropped",
            "Exposure events given up on, by reason (buffer_full while Kafka is away, shutdown).",
            ["reason"],
            registry=r,
        )
        self.exposures_buffered = Gauge(
            "marquee_router_exposure_events_buffered",
            "Exposure events waiting to be sent.",
            multiprocess_mode="livesum",
            registry=r,
        )
        self.shadow = Counter(
            "marquee_router_shadow_requests",
            "Copies sent to the shadow arm, by outcome (ok, a failure reason, or shed).",
            ["outcome"],
            registry=r,
        )
        self.shadow_latency = Histogram(
            "marquee_router_shadow_duration_seconds",
            "Time of one shadow call.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.shadow_overlap = Histogram(
            "marquee_router_shadow_overlap_ratio",
            "Share of the served list that the shadow arm also returned.",
            buckets=(0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0),
            registry=r,
        )

    def render(self) -> tuple[bytes, str]:
        """Body and content type for ``/metrics``, summed over live workers when multiprocess."""
        return exposition(None if multiprocess_enabled() else self.registry)
