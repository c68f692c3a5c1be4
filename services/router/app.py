"""HTTP transport of the router: parse, validate, delegate to ``Router``; the shared service shell.

``create_app(settings)`` loads and validates the experiment file (a bad file fails start-up
loudly); gunicorn's ``post_worker_init`` starts the config watcher and the exposure sender in
every worker.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from flask import Blueprint, Flask, Response, g, request

from services.common.service import (
    CLIENT_TIME_HEADER,
    TEXT,
    ops_blueprint,
    parse_user_id,
    register_error_handlers,
    register_request_log,
)
from services.common.settings import KafkaSettings
from services.router.config import ConfigHolder
from services.router.core import Budget, Router
from services.router.exposures import ExposureLog, Producer
from services.router.metrics import RouterMetrics
from services.router.settings import RouterSettings
from services.router.upstream import Upstream

EXTENSION = "marquee_router"

access_log = logging.getLogger("marquee.router.access")
log = logging.getLogger("marquee.router.app")


@dataclass(frozen=True)
class Runtime:
    """The per-process objects behind an app (``app.extensions['marquee_router']``)."""

    settings: RouterSettings
    holder: ConfigHolder
    router: Router
    metrics: RouterMetrics
    exposures: ExposureLog | None

    def start(self) -> None:
        """Start the config watcher and the exposure sender in this process (after fork)."""
        self.holder.refresh()  # a worker forked late picks up a file changed since preload
        self.holder.start()
        if self.exposures is not None:
            self.exposures.start()

    def stop(self) -> None:
        """Stop background work; buffered exposures get a last chance to be sent."""
        self.holder.stop()
        if self.exposures is not None:
            self.exposures.stop(timeout=5.0)
        self.router.close()


def producer_factory(settings: RouterSettings) -> Producer:
    """A Kafka producer for the exposure log (called in the sender thread, retried there)."""
    from services.common.kafka import make_producer

    assert settings.kafka_bootstrap_servers is not None
    kafka = KafkaSettings(
        kafka_bootstrap_servers=settings.kafka_bootstrap_servers,
        kafka_request_timeout_ms=settings.kafka_request_timeout_ms,
        kafka_connect_timeout_s=2.0,
    )
    producer: Producer = make_producer(
        kafka,
        linger_ms=20,
        enable_idempotence=True,  # the client's own retries never duplicate an event
        retries=1_000_000,  # retry (idempotently) until delivery_timeout_ms, not give up early
        max_block_ms=settings.kafka_max_block_ms,
    )
    return producer


CLIENT_TIME = CLIENT_TIME_HEADER
_MAX_CLIENT_NS = 4_102_444_800 * 10**9  # 2100-01-01: past it, a clock is broken, not early


def client_time(value: str | None) -> int | None:
    """The caller's time from its header, or None when absent or not a plausible ns stamp."""
    if value is None or not value.isascii() or not value.isdigit() or len(value) > 19:
        return None
    ns = int(value)
    return ns if 0 < ns < _MAX_CLIENT_NS else None


def recommend_blueprint(runtime: Runtime) -> Blueprint:
    """``GET /recommend/<user_id>``: the streaming service's call, routed to an arm."""
    bp = Blueprint("router", __name__)
    router = runtime.router
    trust_client_time = runtime.settings.trust_client_time

    @bp.get("/recommend/<path:raw_user_id>")
    @bp.get("/recommend/", defaults={"raw_user_id": ""})
    @bp.get("/recommend", defaults={"raw_user_id": ""})
    def recommend(raw_user_id: str) -> Response:
        user_id = parse_user_id(raw_user_id)  # a bad id is a 400 and is never forwarded
        at_ns = client_time(request.headers.get(CLIENT_TIME)) if trust_client_time else None
        answer = router.route(user_id, g.get("request_id"), at_ns)
        resp = Response(answer.body(), content_type=TEXT)
        resp.headers.update(answer.headers)
        resp.headers["X-Experiment"] = answer.experiment
        resp.headers["X-Arm"] = answer.label
        resp.headers["X-Served-By"] = answer.served_by
        if answer.fallback is not None:
            resp.headers["X-Fallback"] = answer.fallback
        g.log_fields = {
            "experiment": answer.experiment,
            "arm": answer.label,
            "served_by": answer.served_by,
            "fallback": answer.fallback,
            "model_version": answer.model[1],
        }
        return resp

    return bp


def create_app(settings: RouterSettings | None = None) -> Flask:
    """Build the app on the experiment file; ConfigError when it is invalid."""
    settings = settings or RouterSettings()  # required fields come from env
    metrics = RouterMetrics()
    upstream = Upstream(connect_timeout_s=settings.connect_timeout_s, pool_size=settings.threads)
    exposures = None
    if settings.kafka_bootstrap_servers:
        exposures = ExposureLog(
            lambda: producer_factory(settings),
            settings.exposure_topic,
            metrics,
            buffer_size=settings.exposure_buffer,
            batch_size=settings.exposure_batch,
        )
    else:
        log.warning("no Kafka configured: exposure events are not recorded")
    routers: list[Router] = []
    holder = ConfigHolder(
        settings.config_path,
        interval_s=settings.reload_interval_s,
        on_change=lambda cfg: routers[0].apply(cfg) if routers else None,
        on_result=lambda result: metrics.config_reloads.labels(result).inc(),
    )
    router = Router(
        holder.current,
        upstream,
        metrics,
        exposures,
        budget=Budget(per_call_s=settings.upstream_timeout_s, total_s=settings.deadline_s),
        breaker_failures=settings.breaker_failures,
        breaker_cooldown_s=settings.breaker_cooldown_s,
        shadow_max_in_flight=settings.shadow_max_in_flight,
    )
    routers.append(router)
    runtime = Runtime(settings, holder, router, metrics, exposures)

    def on_error(status: int) -> None:
        if request.path.startswith("/recommend"):
            metrics.requests.labels("none", str(status)).inc()

    def ready() -> tuple[bool, str]:
        cfg = router.plan.config
        return True, f"experiment {cfg.experiment} {cfg.status} ({len(cfg.arms)} arms)"

    app = Flask("marquee-router")
    # No redirects between /recommend and /recommend/: a client of this API wants a 400.
    app.url_map.redirect_defaults = False
    app.extensions[EXTENSION] = runtime
    register_error_handlers(app, style="text", on_error=on_error)
    register_request_log(app, access_log, enabled=settings.access_log)
    app.register_blueprint(ops_blueprint(ready, metrics=metrics.render))
    app.register_blueprint(recommend_blueprint(runtime))
    return app


def runtime_of(app: Flask) -> Runtime:
    """The Runtime of an app built by ``create_app``."""
    runtime: Runtime = app.extensions[EXTENSION]
    return runtime
