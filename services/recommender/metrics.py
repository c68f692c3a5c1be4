"""Prometheus metrics of the recommender: one object per app, aggregated across gunicorn workers."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.common.metrics import exposition, multiprocess_enabled

# Fine buckets at the low end: compute is sub-millisecond, the deadline is 600 ms.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.6, 1.0, 2.5)


class RecommenderMetrics:
    """The recommender's metrics, registered in a registry of their own (safe to build twice)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "marquee_recommender_requests",
            "Recommendation requests answered, by model version and HTTP status.",
            ["model_version", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "marquee_recommender_request_duration_seconds",
            "Time to answer GET /recommend, in the app (excludes gunicorn queueing).",
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
        self.model_info = Gauge(
            "marquee_recommender_model_info",
            "1 for the model version a worker serves (0 for versions it served before).",
            ["model_name", "model_version", "family", "snapshot_hash", "git_sha"],
            multiprocess_mode="liveall",
            registry=r,
        )
        self.model_loaded_timestamp = Gauge(
            "marquee_recommender_model_loaded_timestamp_seconds",
            "Unix time the serving model was swapped in.",
            multiprocess_mode="livemax",
            registry=r,
        )

    def render(self) -> tuple[bytes, str]:
        """Body and content type for ``/metrics``, summed over live workers when multiprocess."""
        return exposition(None if multiprocess_enabled() else self.registry)
