"""Prometheus metrics of the simulator (base units; never a user id as a label)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

disable_created_metrics()  # type: ignore[no-untyped-call]

LINES = Counter("marquee_sim_lines_total", "Stream lines emitted, by line kind", ["kind"])
INJECTED = Counter(
    "marquee_sim_injected_lines_total", "Injected lines emitted, by injection kind", ["kind"]
)
RECO_CALLS = Counter(
    "marquee_sim_reco_requests_total", "Recommendation calls made, by logged status", ["status"]
)
RECO_MALFORMED = Counter(
    "marquee_sim_reco_malformed_answers_total",
    "200 answers rejected as malformed, by reason",
    ["reason"],
)
RECO_SECONDS = Histogram(
    "marquee_sim_reco_response_seconds",
    "Response time of recommendation calls as logged",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.45, 0.6, 1.0, 2.5),
)
SIM_TIME = Gauge("marquee_sim_simulated_time_seconds", "Simulated clock, seconds since the epoch")
LAG = Gauge("marquee_sim_live_lag_seconds", "How far the live stream trails the wall clock")
API_REQUESTS = Counter(
    "marquee_sim_api_requests_total",
    "User/movie API requests, by endpoint and status",
    ["endpoint", "code"],
)
API_SECONDS = Histogram(
    "marquee_sim_api_request_duration_seconds",
    "User/movie API request latency",
    ["endpoint"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 2.5),
)
