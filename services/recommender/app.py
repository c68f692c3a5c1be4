"""HTTP transport of the recommender: parse, validate, delegate to RecommendationService.

``create_app(settings)`` wires one process's objects; gunicorn calls it per master (preload) or
worker, and ``post_worker_init`` starts the model watcher in every worker.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from dataclasses import dataclass

from flask import Blueprint, Flask, Response, g, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from services.common.artifacts import Registry
from services.recommender.demographics import UserDemographics
from services.recommender.metrics import RecommenderMetrics
from services.recommender.model import ModelHolder
from services.recommender.service import InvalidUserIdError, RecommendationService, parse_user_id
from services.recommender.settings import RecommenderSettings

EXTENSION = "marquee_recommender"
TEXT = "text/plain; charset=utf-8"
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_PROBES = frozenset({"/healthz", "/readyz", "/metrics"})

access_log = logging.getLogger("marquee.recommender.access")
log = logging.getLogger("marquee.recommender.app")


@dataclass(frozen=True)
class Runtime:
    """The per-process objects behind an app (``app.extensions['marquee_recommender']``)."""

    settings: RecommenderSettings
    holder: ModelHolder
    service: RecommendationService
    metrics: RecommenderMetrics

    def start(self) -> None:
        """Start serving from this process (the watcher thread cannot survive a fork)."""
        # A worker forked long after the preloading master (a restart) catches up before its
        # first request instead of serving the master's older model for a poll interval.
        self.holder.refresh()
        self.holder.start()

    def stop(self) -> None:
        """Stop background work."""
        self.holder.stop()


def _text(body: str, status: int = 200) -> Response:
    return Response(body, status=status, content_type=TEXT)


def recommend_blueprint(runtime: Runtime) -> Blueprint:
    """Routes: /recommend/<user_id>, /healthz, /readyz, /metrics."""
    bp = Blueprint("recommender", __name__)
    service, holder, metrics = runtime.service, runtime.holder, runtime.metrics

    @bp.get("/recommend/<path:raw_user_id>")
    @bp.get("/recommend/", defaults={"raw_user_id": ""})
    @bp.get("/recommend", defaults={"raw_user_id": ""})
    def recommend(raw_user_id: str) -> Response:
        started = time.perf_counter()
        try:
            user_id = parse_user_id(raw_user_id)
        except InvalidUserIdError as exc:
            metrics.requests.labels("none", "400").inc()
            return _text(str(exc), 400)
        rec = service.recommend(user_id)
        if rec is None:
            metrics.requests.labels("none", "503").inc()
            return _text("no model loaded yet", 503)
        resp = _text(rec.body())
        resp.headers.update(rec.model.headers)
        resp.headers["X-Recommendation-Kind"] = rec.kind
        g.log_fields = {**rec.model.log_fields, "kind": rec.kind, "n_items": len(rec.items)}
        metrics.requests.labels(rec.model.version, "200").inc()
        metrics.latency.observe(time.perf_counter() - started)
        return resp

    @bp.get("/healthz")
    def healthz() -> Response:
        return _text("ok")

    @bp.get("/readyz")
    def readyz() -> Response:
        model = holder.current
        if model is None:
            return _text("no model loaded yet", 503)
        return _text(f"ready {model.name} {model.version}")

    @bp.get("/metrics")
    def prometheus_metrics() -> Response:
        body, content_type = metrics.render()
        return Response(body, content_type=content_type)

    return bp


def _install_hooks(app: Flask, runtime: Runtime) -> None:
    """Request ids, the JSON access log and one-line plain-text errors for every route."""
    log_enabled = runtime.settings.access_log

    @app.before_request
    def _begin() -> None:
        g.started = time.perf_counter()
        rid = request.headers.get("X-Request-Id", "")
        g.request_id = rid if _REQUEST_ID.fullmatch(rid) else uuid.uuid4().hex

    @app.after_request
    def _finish(resp: Response) -> Response:
        rid = g.get("request_id") or uuid.uuid4().hex
        resp.headers["X-Request-Id"] = rid
        if log_enabled:
            level = logging.DEBUG if request.path in _PROBES else logging.INFO
            if access_log.isEnabledFor(level):
                access_log.log(
                    level,
                    "request",
                    extra={
                        "request_id": rid,
                        "method": request.method,
                        "path": request.path,
                        "status": resp.status_code,
                        "duration_ms": round(
                            (time.perf_counter() - g.get("started", 0.0)) * 1e3, 3
                        ),
                        "remote_addr": request.remote_addr,
                        **g.get("log_fields", {}),
                    },
                )
        return resp

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        code = exc.code or 500
        if request.path.startswith("/recommend"):
            runtime.metrics.requests.labels("none", str(code)).inc()
        resp = _text(f"{code} {exc.name}".lower(), code)
        if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
            resp.headers["Allow"] = ", ".join(exc.valid_methods)
        return resp

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("unhandled error", extra={"path": request.path})
        if request.path.startswith("/recommend"):
            runtime.metrics.requests.labels("none", "500").inc()
        return _text("internal error", 500)


def create_app(settings: RecommenderSettings | None = None) -> Flask:
    """Build the app and load the model once (synchronously); call ``Runtime.start`` to watch."""
    settings = settings or RecommenderSettings()  # required fields come from env
    metrics = RecommenderMetrics()
    holder = ModelHolder(
        Registry(settings.registry_root),
        settings.model_name,
        settings.model_ref,
        metrics,
        poll_interval_s=settings.poll_interval_s,
        load_retry_s=settings.load_retry_s,
    )
    holder.refresh()  # not ready yet is fine: the watcher keeps trying, /readyz says 503
    demographics = (
        UserDemographics(
            settings.users_api_url,
            metrics,
            timeout_s=settings.users_api_timeout_s,
            cache_size=settings.users_cache_size,
            ttl_s=settings.users_cache_ttl_s,
            cooldown_s=settings.users_api_cooldown_s,
        )
        if settings.users_api_url
        else None
    )
    service = RecommendationService(holder, metrics, demographics=demographics, k=settings.top_k)
    runtime = Runtime(settings=settings, holder=holder, service=service, metrics=metrics)
    app = Flask(__name__)
    # No redirects between /recommend and /recommend/: a client of this API wants a 400, not a 308.
    app.url_map.redirect_defaults = False
    app.extensions[EXTENSION] = runtime
    _install_hooks(app, runtime)
    app.register_blueprint(recommend_blueprint(runtime))
    return app


def runtime_of(app: Flask) -> Runtime:
    """The Runtime of an app built by ``create_app``."""
    runtime: Runtime = app.extensions[EXTENSION]
    return runtime
