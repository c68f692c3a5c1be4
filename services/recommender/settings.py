"""Settings of the recommendation server (env prefix ``MARQUEE_RECOMMENDER_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from services.common.settings import ServiceSettings, service_config


class RecommenderSettings(ServiceSettings):
    """Everything the recommender reads from its environment; one class for app and gunicorn."""

    model_config = service_config("MARQUEE_RECOMMENDER_")

    registry_root: Path
    """Root folder of the model registry; required, a server without models is no server."""
    model_name: str
    """Registry name of the model to serve; required."""
    model_ref: str = "stable"
    """Channel to follow (``stable`` or ``canary``) or a version to pin."""
    poll_interval_s: float = Field(default=2.0, gt=0)
    """How often each worker re-reads the channel pointer for a new version."""
    load_retry_s: float = Field(default=30.0, gt=0)
    """How long to wait before retrying a version whose load failed."""
    top_k: int = Field(default=20, ge=1, le=20)
    """Length of every answer; the contract allows at most 20."""
    users_api_url: str | None = None
    """Base URL of the user API (``GET <url>/user/<id>``) for cold-start segments; unset: none."""
    users_api_timeout_s: float = Field(default=0.1, gt=0, le=0.3)
    """Budget of one user look-up; the whole answer must stay far below the 600 ms deadline."""
    users_cache_size: int = Field(default=100_000, ge=0)
    """Most user segments remembered per worker (least recently used are dropped first)."""
    users_cache_ttl_s: float = Field(default=3600.0, gt=0)
    """How long a fetched segment is trusted."""
    users_api_cooldown_s: float = Field(default=30.0, ge=0)
    """After a failed look-up, skip the user API this long so an outage costs no latency."""
    access_log: bool = True
    """Write one JSON access-log line per request."""
    bind: str = "0.0.0.0:8082"
    """host:port gunicorn listens on (the streaming service calls port 8082)."""
    workers: int = Field(default=2, ge=1)
    """gunicorn worker processes; about one per core."""
    threads: int = Field(default=4, ge=1)
    """Threads per worker (gthread): scoring releases the GIL in BLAS, I/O waits overlap."""
    preload: bool = True
    """Load the model once in the gunicorn master so workers share its pages copy-on-write."""
    graceful_timeout_s: int = Field(default=20, ge=1)
    """Seconds a worker may take to finish in-flight requests after SIGTERM."""
    metrics_dir: Path = Path(".run/recommender-metrics")
    """Folder for prometheus multiprocess files; emptied when the server starts."""
