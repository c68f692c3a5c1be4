"""The ops HTTP port: the common ``/healthz``, ``/readyz``, ``/metrics`` plus ``/stats``."""

from __future__ import annotations

from typing import Any, Protocol

from flask import Blueprint, Flask, Response, jsonify

from services.common.service import ops_blueprint, register_error_handlers
from services.ingest.settings import IngestSettings


class Status(Protocol):
    """What the ops endpoints ask of the running service."""

    def healthy(self) -> bool: ...

    def ready(self) -> tuple[bool, str]: ...

    def stats(self) -> dict[str, Any]: ...


class _Starting:
    """Status before the service is wired: alive, not ready."""

    def healthy(self) -> bool:
        return True

    def ready(self) -> tuple[bool, str]:
        return False, "starting"

    def stats(self) -> dict[str, Any]:
        return {}


def stats_blueprint(status: Status) -> Blueprint:
    """``/stats``: the running service's counters as JSON."""
    bp = Blueprint("ingest_stats", __name__)

    @bp.get("/stats")
    def stats() -> Response:
        return jsonify(status.stats())

    return bp


def create_app(settings: IngestSettings, status: Status | None = None) -> Flask:
    """The ops app of one ingest process: the common probes plus ``/stats``."""
    status = status or _Starting()
    app = Flask("marquee-ingest")
    app.config["INGEST_SETTINGS"] = settings
    register_error_handlers(app, style="json")
    app.register_blueprint(ops_blueprint(status.ready, healthy=status.healthy))
    app.register_blueprint(stats_blueprint(status))
    return app
