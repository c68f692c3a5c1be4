"""Settings of the recommendation server (env prefix ``MARQUEE_RECOMMENDER_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from services.common.settings import ModelSigningSettings, ServiceSettings, service_config


class RecommenderSettings(ServiceSettings):
    """Everything the recommender reads from its environment; one class for app and gunicorn."""

    model_config = service_config("MARQUEE_RECOMMENDER_")

    registry_root: Path
    """Root folder of the model registry; required, a server without models is no server."""
    model_name: str
    """Registry name of the model to serve; required."""
    model_ref: str = "stable"
    """Channel to follow (``stable`` or ``canary``) or a version to pin."""
    wait_for_model: bool = False
    """Start even when the registry, the model or its channel does not exist yet, answering
    503 until a version appears (a server deployed before the first training); by default
    ``marquee serve`` refuses to start and says what it looked for."""
    poll_interval_s: float = Field(default=2.0, gt=0)
    """How often each worker re-reads the channel pointer for a new version."""
    load_retry_s: float = Field(default=30.0, gt=0)
    """How long to wait before retrying a version whose load failed."""
    top_k: int = Field(default=20, ge=1, le=20)
    """Length of every answer; the contract allows at most 20."""
    users_api_url: str | None = None
    """Base URL of the user API (``GET <url>/user/<id>``) for cold-start segments; unset: none."""
    users_api_timeout_s: float = Field(default=0.1, gt=0, le=0.3)
    """Total deadline of one user look-up (connect to last body byte); the whole answer must
    stay far below the contract's 600 ms."""
    users_api_concurrency: int = Field(default=4, ge=1, le=64)
    """User look-ups in flight per worker at most; past that unknown users get the overall
    list at once instead of waiting, so a slow user API cannot tie up the serving threads."""
    users_cache_size: int = Field(default=100_000, ge=0)
    """Most user segments remembered per worker (least recently used are dropped first)."""
    users_cache_ttl_s: float = Field(default=3600.0, gt=0)
    """How long a fetched segment is trusted."""
    users_api_cooldown_s: float = Field(default=30.0, ge=0)
    """After a failed look-up, skip the user API this long so an outage costs no latency."""
    list_cache_size: int = Field(default=100_000, ge=0)
    """Known users whose list each worker keeps per model version (0: no cache).  A known
    user's list changes only with the model, so a repeat request costs no scoring; the cache
    is emptied by every model swap and never holds more than this many users (about 0.3 KB
    each)."""
    access_log: bool = True
    """Write one JSON access-log line per request."""
    bind: str = "127.0.0.1:8082"
    """host:port gunicorn listens on (the streaming service calls port 8082); loopback unless
    told otherwise (a container sets ``0.0.0.0:8082`` explicitly)."""
    workers: int = Field(default=2, ge=1)
    """gunicorn worker processes; about one per core."""
    threads: int = Field(default=4, ge=1)
    """Threads per worker (gthread): scoring releases the GIL in BLAS, I/O waits overlap."""
    preload: bool = True
    """Load the model once in the gunicorn master so workers share its pages copy-on-write."""
    graceful_timeout_s: int = Field(default=20, ge=1)
    """Seconds a worker may take to finish in-flight requests after SIGTERM."""
    metrics_dir: Path = Path(".run/recommender-metrics")
    """Folder for prometheus multiprocess files, locked by the server that runs on it and
    emptied only when a server claims it; two servers on one machine need two folders."""
    signing: ModelSigningSettings = Field(default_factory=ModelSigningSettings)
    """Model-signing key, read from ``MARQUEE_MODEL_SIGNING_KEY`` or ``..._KEY_FILE`` (shared
    with the trainer); when set, unsigned or mis-signed versions are refused."""
