"""HTTP transport of the recommender: parse, validate, delegate to RecommendationService.

``create_app(settings)`` wires one process's objects; gunicorn calls it per master (preload) or
worker, and ``post_worker_init`` starts the model watcher in every worker.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from flask import Blueprint, Flask, Response, g, request

from services.common.artifacts import Registry
from services.common.service import (
    TEXT,
    ops_blueprint,
    parse_user_id,
    register_error_handlers,
    register_request_log,
)
from services.recommender.demographics import UserDemographics
from services.recommender.metrics import NO_MODEL, RecommenderMetrics
from services.recommender.model import ModelHolder
from services.recommender.service import RecommendationService
from services.recommender.settings import RecommenderSettings

EXTENSION = "marquee_recommender"

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
        if self.service.demographics is not None:
            self.service.demographics.close()

    def ready(self) -> tuple[bool, str]:
        """Ready once a model is loaded: (ready?, which model)."""
        model = self.holder.current
        if model is None:
            return False, "no model loaded yet"
        return True, f"{model.name} {model.version}"


def _text(body: str, status: int = 200) -> Response:
    return Response(body, status=status, content_type=TEXT)


def recommend_blueprint(runtime: Runtime) -> Blueprint:
    """Route: /recommend/<user_id>; a bad id raises InvalidUserIdError, answered 400."""
    bp = Blueprint("recommender", __name__)
    service, metrics = runtime.service, runtime.metrics

    @bp.get("/recommend/<path:raw_user_id>")
    @bp.get("/recommend/", defaults={"raw_user_id": ""})
    @bp.get("/recommend", defaults={"raw_user_id": ""})
    def recommend(raw_user_id: str) -> Response:
        started = time.perf_counter()
        user_id = parse_user_id(raw_user_id)
        rec = service.recommend(user_id)
        if rec is None:
            metrics.requests.labels(NO_MODEL, "503").inc()
            return _text("no model loaded yet", 503)
        resp = _text(rec.body())
        resp.headers.update(rec.model.headers)
        resp.headers["X-Recommendation-Kind"] = rec.kind
        g.log_fields = {**rec.model.log_fields, "kind": rec.kind, "n_items": len(rec.items)}
        metrics.requests.labels(rec.model.version, "200").inc()
        metrics.latency.labels(rec.model.version).observe(time.perf_counter() - started)
        return resp

    return bp


def create_app(settings: RecommenderSettings | None = None) -> Flask:
    """Build the app and load the model once (synchronously); call ``Runtime.start`` to watch."""
    settings = settings or RecommenderSettings()  # required fields come from env
    metrics = RecommenderMetrics()
    holder = ModelHolder(
        Registry(settings.registry_root, signing_key=settings.signing.key()),
        settings.model_name,
        settings.model_ref,
        metrics,
        poll_interval_s=settings.poll_interval_s,
        load_retry_s=settings.load_retry_s,
        list_cache_size=settings.list_cache_size,
    )
    holder.refresh()  # not ready yet is fine: the watcher keeps trying, /readyz says 503
    demographics = (
        UserDemographics(
            settings.users_api_url,
            metrics,
            timeout_s=settings.users_api_timeout_s,
            max_in_flight=settings.users_api_concurrency,
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

    def count_error(status: int) -> None:
        if request.path.startswith("/recommend"):
            # No model answered a bad request: labelling it with a version would blame one.
            metrics.requests.labels(NO_MODEL, str(status)).inc()

    # The contract's answers are one line of text, and so are its errors.
    register_error_handlers(app, style="text", on_error=count_error)
    register_request_log(app, access_log, enabled=settings.access_log)
    app.register_blueprint(ops_blueprint(runtime.ready, metrics=metrics.render))
    app.register_blueprint(recommend_blueprint(runtime))
    return app


def runtime_of(app: Flask) -> Runtime:
    """The Runtime of an app built by ``create_app``."""
    runtime: Runtime = app.extensions[EXTENSION]
    return runtime
