"""Prometheus metrics of the recommender: one object per app, aggregated across gunicorn workers.

A canary is judged by comparing arms, so every request-level series carries ``model_version``
(empty when no model answered: a bad request, an unknown path, no model loaded yet), and the
counters a dashboard divides by exist at zero from the start instead of appearing on first use.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.common.metrics import exposition, multiprocess_enabled

# Fine buckets at the low end: compute is sub-millisecond, the deadline is 600 ms.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.6, 1.0, 2.5)
NO_MODEL: Final = ""
"""``model_version`` of answers no model made (Prometheus reads an empty label as absent)."""
FALLBACK_REASONS: Final = ("scoring_error", "no_segment")
LOAD_FAILURE_REASONS: Final = ("pointer", "signature", "verification", "error")
LOOKUP_RESULTS: Final = (
    "cache_hit",
    "fetched",
    "not_found",
    "skipped",
    "saturated",
    "timeout",
    "error",
)


class RecommenderMetrics:
    """The recommender's metrics, registered in a registry of their own (safe to build twice)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "marquee_recommender_requests",
            "Recommendation requests answered, by model version (empty: no model) and status.",
            ["model_version", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "marquee_recommender_request_duration_seconds",
            "Time to answer GET /recommend with a list, by model version (excludes gunicorn "
            "queueing).",
            ["model_version"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.cold_starts = Counter(
            "marquee_recommender_cold_starts",
            "Answers for users the model does not know (segment or overall popularity).",
            ["model_version", "source"],
            registry=r,
        )
        self.fallbacks = Counter(
            "marquee_recommender_fallbacks",
            "Answers degraded to a simpler list, by reason.",
            ["reason"],
            registry=r,
        )
        self.list_cache = Counter(
            "marquee_recommender_list_cache",
            "Known users' answers served from the per-model list cache (hit) or scored (miss).",
            ["result"],
            registry=r,
        )
        self.user_lookups = Counter(
            "marquee_recommender_user_lookups",
            "Demographic look-ups for cold-start segments, by result.",
            ["result"],
            registry=r,
        )
        self.model_loads = Counter(
            "marquee_recommender_model_loads",
            "Model versions loaded and verified.",
            ["model_version"],
            registry=r,
        )
        self.model_load_failures = Counter(
            "marquee_recommender_model_load_failures",
            "Model loads refused or failed; the previous model keeps serving.",
            ["reason"],
            registry=r,
        )
        # livemax, not liveall: one series per version however often workers restart (liveall
        # adds a pid label, so every restart would mint new series).  Workers per version are
        # counted by model_workers below.
        self.model_info = Gauge(
            "marquee_recommender_model_info",
            "1 while some live worker serves this model version (0 once none does).",
            ["model_name", "model_version", "family", "snapshot_hash", "git_sha"],
            multiprocess_mode="livemax",
            registry=r,
        )
        self.model_workers = Gauge(
            "marquee_recommender_model_workers",
            "Live worker processes serving each model version.",
            ["model_version"],
            multiprocess_mode="livesum",
            registry=r,
        )
        self.model_loaded_timestamp = Gauge(
            "marquee_recommender_model_loaded_timestamp_seconds",
            "Unix time the serving model was swapped in.",
            multiprocess_mode="livemax",
            registry=r,
        )
        # Zero from the start: a rate() over a series that appears on the first failure
        # misses that failure, and an alert on it cannot tell "none" from "not scraped".
        for reason in FALLBACK_REASONS:
            self.fallbacks.labels(reason)
        for reason in LOAD_FAILURE_REASONS:
            self.model_load_failures.labels(reason)
        for result in LOOKUP_RESULTS:
            self.user_lookups.labels(result)

    def render(self) -> tuple[bytes, str]:
        """Body and content type for ``/metrics``, summed over live workers when multiprocess."""
        return exposition(None if multiprocess_enabled() else self.registry)
