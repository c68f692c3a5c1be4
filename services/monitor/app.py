"""The monitor's HTTP face: the experiment page, a JSON API and the shared ops routes.

``GET /`` the experiment page (HTML, inline SVG); ``GET /api/experiment`` the latest step;
``GET /api/history?limit=N`` per-arm rows, served-list quality and decisions from SQL;
``/healthz``, ``/readyz``, ``/metrics`` from the service shell.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from flask import Blueprint, Flask, Response, abort, jsonify, request

from services.common.service import ops_blueprint, register_error_handlers, register_request_log
from services.monitor.history import History
from services.monitor.page import render

__all__ = ["create_app"]

access_log = logging.getLogger("marquee.monitor.access")
MAX_LIMIT = 10_000


class Latest(Protocol):
    """What the routes ask of the running monitor."""

    def snapshot(self) -> dict[str, Any] | None: ...


def _limit() -> int:
    raw = request.args.get("limit", "200")
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        abort(400, description=f"limit must be an integer from 1 to {MAX_LIMIT}")
    return int(raw)


def monitor_blueprint(monitor: Latest, history: History | None) -> Blueprint:
    """The page and the JSON API."""
    bp = Blueprint("monitor", __name__)

    def _history(experiment: str, limit: int) -> tuple[list[Any], list[Any], list[Any]]:
        if history is None:
            return [], [], []
        return (
            history.arm_series(experiment)[-limit * 8 :],
            history.quality_series(experiment)[-limit * 8 :],
            history.decisions(experiment, limit),
        )

    @bp.get("/")
    def page() -> Response:
        snap = monitor.snapshot()
        series, _, decisions = _history(snap["experiment"], 200) if snap else ([], [], [])
        return Response(render(snap, series, decisions), content_type="text/html; charset=utf-8")

    @bp.get("/api/experiment")
    def experiment() -> Response | tuple[Response, int]:
        snap = monitor.snapshot()
        if snap is None:
            return jsonify(error="no evaluation step yet"), 503
        return jsonify(snap)

    @bp.get("/api/history")
    def history_api() -> Response | tuple[Response, int]:
        limit = _limit()
        snap = monitor.snapshot()
        if snap is None:
            return jsonify(error="no evaluation step yet"), 503
        series, quality, decisions = _history(snap["experiment"], limit)
        return jsonify(
            experiment=snap["experiment"], arms=series, served_quality=quality, decisions=decisions
        )

    return bp


def create_app(settings: Any, monitor: Latest, history: History | None = None) -> Flask:
    """The monitor's app: page, API and ops routes around a running ``Monitor``."""
    app = Flask("marquee-monitor")
    app.config["MONITOR_SETTINGS"] = settings
    register_error_handlers(app, style="json")
    register_request_log(app, access_log)

    def ready() -> tuple[bool, str]:
        snap = monitor.snapshot()
        return (snap is not None, "evaluating" if snap is not None else "no step yet")

    app.register_blueprint(ops_blueprint(ready))
    app.register_blueprint(monitor_blueprint(monitor, history))
    return app
