"""The ops HTTP port: ``/healthz``, ``/readyz``, ``/metrics``, ``/stats`` (a thin blueprint)."""

from __future__ import annotations

from typing import Any, Protocol

from flask import Blueprint, Flask, Response, jsonify

from services.common.metrics import exposition
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


def ops_blueprint(status: Status) -> Blueprint:
    """Routes that only ask ``status`` and format its answer."""
    bp = Blueprint("ops", __name__)

    @bp.get("/healthz")
    def healthz() -> tuple[Response, int]:
        ok = status.healthy()
        return jsonify(status="ok" if ok else "unhealthy"), 200 if ok else 503

    @bp.get("/readyz")
    def readyz() -> tuple[Response, int]:
        ok, why = status.ready()
        return jsonify(status="ready" if ok else "not ready", detail=why), 200 if ok else 503

    @bp.get("/metrics")
    def metrics() -> Response:
        body, ctype = exposition()
        return Response(body, content_type=ctype)

    @bp.get("/stats")
    def stats() -> Response:
        return jsonify(status.stats())

    return bp


def create_app(settings: IngestSettings, status: Status | None = None) -> Flask:
    """The ops app of one ingest process."""
    app = Flask("marquee-ingest")
    app.config["INGEST_SETTINGS"] = settings
    app.register_blueprint(ops_blueprint(status or _Starting()))
    return app
