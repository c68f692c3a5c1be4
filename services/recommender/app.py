"""HTTP transport of the recommender: parse, validate, delegate to RecommendationService.

``create_app(settings)`` wires one process's objects; gunicorn calls it per master (preload) or
worker, and ``post_worker_init`` starts the model watcher in every worker.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Flask, Response, g, request

from services.common.artifacts import Registry
from services.common.metrics import BoundChildren
from services.common.service import (
    TEXT,
    InvalidUserIdError,
    log_request,
    ops_blueprint,
    parse_user_id,
    register_error_handlers,
    register_request_log,
    request_id_of,
)
from services.recommender.demographics import UserDemographics
from services.recommender.metrics import NO_MODEL, RecommenderMetrics
from services.recommender.model import ModelHolder
from services.recommender.service import RecommendationService
from services.recommender.settings import RecommenderSettings

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication

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


class _Answered:
    """Each model version's answered-request counter and latency histogram, bound once."""

    def __init__(self, metrics: RecommenderMetrics) -> None:
        self.metrics = metrics
        # a long-lived worker sees many versions; keep a few bound
        self._bound = BoundChildren(limit=34)

    def count(self, version: str, started: float) -> None:
        """One list answered by ``version``, ``started`` (perf_counter) ago."""
        m, bound = self.metrics, self._bound
        bound(m.requests, version, "200").inc()
        bound(m.latency, version).observe(time.perf_counter() - started)


def cached_answers(
    wsgi: WSGIApplication, runtime: Runtime, answered: _Answered, *, access_log_enabled: bool
) -> WSGIApplication:
    """WSGI: ``GET /recommend/<id>`` of a user whose list is cached, answered before Flask.

    A repeat request costs no scoring, and Flask's request context, routing and response object
    then cost more than the answer itself.  The answer is the Flask route's, byte for byte: the
    same headers, access-log line and metrics (``tests/recommender/test_contract.py`` compares
    both).  Anything else (a bad id, a list not cached, another path or method) goes to Flask.
    """
    service = runtime.service
    prefix = "/recommend/"
    cut = len(prefix)

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path: str = environ.get("PATH_INFO", "")
        if environ.get("REQUEST_METHOD") == "GET" and path.startswith(prefix):
            started = time.perf_counter()
            try:
                rec = service.cached(parse_user_id(path[cut:]))
            except InvalidUserIdError:
                rec = None  # Flask answers the 400
            if rec is not None:
                model = rec.model
                body = rec.body().encode()
                rid = request_id_of(environ.get("HTTP_X_REQUEST_ID"))
                headers = [
                    *model.answer_headers[rec.kind],
                    ("Content-Length", str(len(body))),
                    ("X-Request-Id", rid),
                ]
                start_response("200 OK", headers)
                answered.count(model.version, started)
                if access_log_enabled:
                    log_request(
                        access_log,
                        request_id=rid,
                        method="GET",
                        path=path,
                        status=200,
                        started=started,
                        remote_addr=environ.get("REMOTE_ADDR"),
                        fields={**model.log_fields, "kind": rec.kind, "n_items": len(rec.items)},
                    )
                return [body]
        return wsgi(environ, start_response)

    return app


def recommend_blueprint(runtime: Runtime, answered: _Answered) -> Blueprint:
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
        model = rec.model
        # the headers as one prebuilt list: Headers.update would search the list per header
        resp = Response(rec.body(), headers=model.answer_headers[rec.kind])
        g.log_fields = {**model.log_fields, "kind": rec.kind, "n_items": len(rec.items)}
        answered.count(model.version, started)
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
    answered = _Answered(metrics)
    app.register_blueprint(recommend_blueprint(runtime, answered))
    app.wsgi_app = cached_answers(  # type: ignore[method-assign,assignment]
        app.wsgi_app, runtime, answered, access_log_enabled=settings.access_log
    )
    return app


def runtime_of(app: Flask) -> Runtime:
    """The Runtime of an app built by ``create_app``."""
    runtime: Runtime = app.extensions[EXTENSION]
    return runtime
