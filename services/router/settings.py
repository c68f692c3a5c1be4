"""Settings of the router (env prefix ``MARQUEE_ROUTER_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from services.common.settings import ServiceSettings, service_config


class RouterSettings(ServiceSettings):
    """Everything the router reads from its environment; one class for app and gunicorn."""

    model_config = service_config("MARQUEE_ROUTER_")

    config_path: Path
    """The experiment YAML file (a mounted ConfigMap); required."""
    reload_interval_s: float = Field(default=1.0, gt=0)
    """How often each worker re-reads the experiment file for changes."""
    upstream_timeout_s: float = Field(default=0.2, gt=0, le=0.5)
    """Budget of one call to the arm a user is assigned to."""
    deadline_s: float = Field(default=0.4, gt=0, le=0.5)
    """Budget of all upstream calls of one request (arm, then control); the client waits 600 ms."""
    connect_timeout_s: float = Field(default=0.05, gt=0)
    """Budget of opening a connection to an arm (connections are pooled and kept alive)."""
    breaker_failures: int = Field(default=5, ge=1)
    """Failures in a row that open an arm's circuit (calls then skip it)."""
    breaker_cooldown_s: float = Field(default=5.0, gt=0)
    """How long an open circuit waits before one probe call."""
    shadow_max_in_flight: int = Field(default=4, ge=1)
    """Shadow calls running at once per worker; more are shed (counted), never queued."""
    kafka_bootstrap_servers: str | None = None
    """Kafka brokers for the exposure log (host:port, comma-separated); unset: no exposure log
    (a warning at start; only for local runs: the monitor needs the exposures)."""
    exposure_topic: str = "exposures"
    """Topic of the exposure events, keyed by user id."""
    exposure_buffer: int = Field(default=100_000, ge=1, le=10_000_000)
    """Exposure events held per worker while Kafka is slow or away (the producer's queue);
    beyond it they are dropped and counted."""
    exposure_batch: int = Field(default=1000, ge=1, le=1_000_000)
    """Most exposure events in one produce request."""
    exposure_linger_s: float = Field(default=1.0, ge=0, le=5)
    """How long the sender waits to fill a batch before sending it: exposures reach Kafka this
    much later, in fewer, fuller produce requests that cost the worker and the broker far less
    CPU (at 600 events/s the broker spent 0.03-0.06 ms per event above its idle at 0.25 s,
    about 0.01 ms at 1 s; benchmarks/bench_router.py reports the broker's CPU per request)."""
    kafka_request_timeout_ms: int = Field(default=10_000, ge=1000)
    """How long one Kafka request of the exposure producer may take."""
    access_log: bool = True
    """Write one JSON access-log line per request."""
    trust_client_time: bool = False
    """Stamp exposures with the caller's ``X-Marquee-Client-Time`` (ns since the epoch) when it
    sends one: a simulated world running faster than the wall clock then gets exposures on its
    own clock, so the 15-minute join with its watches holds.  Off in production, where a client
    could forge it."""
    bind: str = "127.0.0.1:8082"
    """host:port gunicorn listens on (the streaming service calls port 8082); loopback unless
    told otherwise (a container sets ``0.0.0.0:8082``)."""
    workers: int = Field(default=2, ge=1)
    """gunicorn worker processes (one event loop each); about one per core."""
    max_idle_connections: int = Field(default=16, ge=1)
    """Kept-alive connections per arm and worker, idle between requests; more are closed.  A
    worker serves any number of requests at once on its event loop."""
    graceful_timeout_s: int = Field(default=20, ge=1)
    """Seconds a worker may take to finish in-flight requests after SIGTERM."""
    metrics_dir: Path = Path(".run/router-metrics")
    """Folder for prometheus multiprocess files; emptied when the server starts."""

    @model_validator(mode="after")
    def _budgets(self) -> RouterSettings:
        if self.upstream_timeout_s > self.deadline_s:
            raise ValueError("upstream_timeout_s must not exceed deadline_s")
        return self
