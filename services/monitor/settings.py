"""Settings of the monitor (env prefix ``MARQUEE_MONITOR_``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator
from pydantic_settings import NoDecode

from services.common.settings import ServiceSettings, service_config


class MonitorSettings(ServiceSettings):
    """Where the monitor reads events and the experiment, where it writes, how it acts."""

    model_config = service_config("MARQUEE_MONITOR_")

    stores: Annotated[tuple[Path, ...], NoDecode] = ()
    """Event store folders to read (comma-separated): the stream's and the exposures' (one
    folder when ingest stores both topics together)."""
    config_path: Path | None = None
    """The experiment YAML the router reads; the monitor reads it and, acting, rewrites it."""
    configmap: str | None = None
    """``<namespace>/<name>[#key]``: the experiment in a Kubernetes ConfigMap instead of a file."""
    registry_path: Path | None = None
    """Model registry whose channel pointers promote and roll back move; unset: config only."""
    db_url: str = "sqlite:///.run/monitor/history.sqlite3"
    """SQLAlchemy URL of the history tables (``postgresql+psycopg://user@host:port/db``)."""
    checkpoint_dir: Path = Path(".run/monitor/state")
    """Folder of the evaluation checkpoints (one file per experiment)."""
    dry_run: bool = False
    """Only report and record decisions; never rewrite the config or move the registry."""
    interval_s: float = Field(default=5.0, gt=0)
    """Seconds between evaluation steps."""
    lateness_s: float = Field(default=60.0, ge=0)
    """Allowed lateness: event time this far behind the stream head is taken as complete."""
    lookback_s: float = Field(default=7 * 86_400, ge=0)
    """Pre-experiment window of each user's watch minutes (the CUPED covariate)."""
    http_host: str = "127.0.0.1"
    """Address of the page, JSON API and metrics (a container sets 0.0.0.0)."""
    http_port: int = Field(default=8090, ge=0, le=65535)
    """Port of the page, JSON API and metrics (0: any free port)."""

    @field_validator("stores", mode="before")
    @classmethod
    def _split(cls, v: Any) -> Any:
        if isinstance(v, str):
            return tuple(p.strip() for p in v.split(",") if p.strip())
        return v

    @model_validator(mode="after")
    def _one_config(self) -> MonitorSettings:
        if (self.config_path is None) == (self.configmap is None):
            raise ValueError("set exactly one of config_path and configmap")
        if not self.stores:
            raise ValueError("stores: at least one event store folder is required")
        return self
