"""HTTP transport of the router on aiohttp: parse, validate, delegate to ``Router``.

The router is a proxy: almost all of its time is waiting on an arm.  An event loop per worker
waits for any number of requests at no cost, where a threaded WSGI server paid a thread
switch, a WSGI round and a blocking HTTP client per request (about 2 ms of CPU per routed
request against 0.4 ms now; benchmarks/bench_router.py).  The answers keep the shapes of
the other services (``services.common.service``): the same probes, one-line 4xx bodies,
``X-Request-Id`` and one JSON access-log line per request.

``create_app(settings)`` loads and validates the experiment file (a bad file fails start-up
loudly); gunicorn's ``post_worker_init`` starts the config watcher and the exposure sender in
every worker (``aiohttp.GunicornWebWorker``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware

from services.common.service import (
    CLIENT_TIME_HEADER,
    InvalidUserIdError,
    health_answer,
    log_request,
    one_line,
    parse_user_id,
    readiness_answer,
    request_id_of,
)
from services.router.config import ConfigHolder
from services.router.core import Budget, Router
from services.router.exposures import ExposureLog, Producer, producer_config
from services.router.metrics import RouterMetrics
from services.router.settings import RouterSettings
from services.router.upstream import Upstream

access_log = logging.getLogger("marquee.router.access")
log = logging.getLogger("marquee.router.app")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
REQUEST_ID = web.RequestKey("request_id", str)
LOG_FIELDS = web.RequestKey("log_fields", dict)


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


RUNTIME = web.AppKey("marquee_router", Runtime)


def producer_factory(settings: RouterSettings, on_delivery: Callable[[Any, Any], None]) -> Producer:
    """This process's Kafka producer for the exposure log (librdkafka: it connects lazily)."""
    from confluent_kafka import Producer as RdKafkaProducer

    assert settings.kafka_bootstrap_servers is not None
    config = producer_config(
        settings.kafka_bootstrap_servers,
        buffer_size=settings.exposure_buffer,
        batch_size=settings.exposure_batch,
        linger_s=settings.exposure_linger_s,
        request_timeout_ms=settings.kafka_request_timeout_ms,
    )
    producer: Producer = RdKafkaProducer({**config, "on_delivery": on_delivery})
    return producer


CLIENT_TIME = CLIENT_TIME_HEADER
_MAX_CLIENT_NS = 4_102_444_800 * 10**9  # 2100-01-01: past it, a clock is broken, not early


def client_time(value: str | None) -> int | None:
    """The caller's time from its header, or None when absent or not a plausible ns stamp."""
    if value is None or not value.isascii() or not value.isdigit() or len(value) > 19:
        return None
    ns = int(value)
    return ns if 0 < ns < _MAX_CLIENT_NS else None


def _text(status: int, line: str) -> web.Response:
    return web.Response(status=status, text=line, content_type="text/plain", charset="utf-8")


def _json(body: dict[str, str], status: int) -> web.Response:
    return web.Response(status=status, text=json.dumps(body), content_type="application/json")


def shell_middleware(on_error: Callable[[str, int], None], *, access: bool = True) -> Middleware:
    """Request ids, one-line error bodies (400 for a bad user id, never a 500 for input) and
    the access log: ``services.common.service``'s shell for an aiohttp app."""

    @web.middleware
    async def shell(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        rid = request_id_of(request.headers.get("X-Request-Id"))
        request[REQUEST_ID] = rid
        resp: web.StreamResponse
        try:
            resp = await handler(request)
        except InvalidUserIdError as exc:
            resp = _text(400, one_line(400, str(exc)))
        except web.HTTPException as exc:
            resp = _text(exc.status, f"{exc.status} {exc.reason}".lower())
            if isinstance(exc, web.HTTPMethodNotAllowed):
                resp.headers["Allow"] = ", ".join(sorted(exc.allowed_methods))
        except asyncio.CancelledError:
            raise  # the client went away; nothing to answer
        except Exception:
            log.exception("unhandled error", extra={"path": request.path})
            resp = _text(500, "internal error")
        if resp.status >= 400:
            on_error(request.path, resp.status)
        resp.headers["X-Request-Id"] = rid
        if access:
            log_request(
                access_log,
                request_id=rid,
                method=request.method,
                path=request.path,
                status=resp.status,
                started=started,
                remote_addr=request.remote,
                fields=request.get(LOG_FIELDS),
            )
        return resp

    return shell


def recommend_handler(runtime: Runtime) -> Handler:
    """``GET /recommend/<user_id>``: the streaming service's call, routed to an arm."""
    router = runtime.router
    trust_client_time = runtime.settings.trust_client_time

    async def recommend(request: web.Request) -> web.StreamResponse:
        # a bad id is a 400 and is never forwarded
        user_id = parse_user_id(request.match_info.get("raw_user_id", ""))
        at_ns = client_time(request.headers.get(CLIENT_TIME)) if trust_client_time else None
        answer = await router.route(user_id, request[REQUEST_ID], at_ns)
        headers = {
            **answer.headers,
            "X-Experiment": answer.experiment,
            "X-Arm": answer.label,
            "X-Served-By": answer.served_by,
        }
        if answer.fallback is not None:
            headers["X-Fallback"] = answer.fallback
        request[LOG_FIELDS] = {
            "experiment": answer.experiment,
            "arm": answer.label,
            "served_by": answer.served_by,
            "fallback": answer.fallback,
            "model_version": answer.model[1],
        }
        return web.Response(
            text=answer.body(), content_type="text/plain", charset="utf-8", headers=headers
        )

    return recommend


def create_app(settings: RouterSettings | None = None) -> web.Application:
    """Build the app on the experiment file; ConfigError when it is invalid."""
    settings = settings or RouterSettings()  # required fields come from env
    metrics = RouterMetrics()
    upstream = Upstream(
        connect_timeout_s=settings.connect_timeout_s, max_idle=settings.max_idle_connections
    )
    exposures = None
    if settings.kafka_bootstrap_servers:
        exposures = ExposureLog(
            lambda on_delivery: producer_factory(settings, on_delivery),
            settings.exposure_topic,
            metrics,
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

    def on_error(path: str, status: int) -> None:
        if path.startswith("/recommend"):
            metrics.requests.labels("none", str(status)).inc()

    async def healthz(request: web.Request) -> web.StreamResponse:
        return _json(*health_answer(True))

    async def readyz(request: web.Request) -> web.StreamResponse:
        cfg = router.plan.config
        detail = f"experiment {cfg.experiment} {cfg.status} ({len(cfg.arms)} arms)"
        return _json(*readiness_answer(True, detail))

    async def prometheus(request: web.Request) -> web.StreamResponse:
        # Reading every worker's files takes milliseconds: not on the serving loop.
        body, content_type = await asyncio.get_running_loop().run_in_executor(None, metrics.render)
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def close_connections(app: web.Application) -> None:
        await router.drain()
        await upstream.close()

    app = web.Application(middlewares=[shell_middleware(on_error, access=settings.access_log)])
    app[RUNTIME] = runtime
    recommend = recommend_handler(runtime)
    # HEAD would count as an exposure: only GET; no redirect between /recommend and /recommend/.
    app.router.add_get("/recommend/{raw_user_id:.*}", recommend, allow_head=False)
    app.router.add_get("/recommend", recommend, allow_head=False)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", prometheus)
    app.on_cleanup.append(close_connections)
    return app


def runtime_of(app: web.Application) -> Runtime:
    """The Runtime of an app built by ``create_app``."""
    return app[RUNTIME]
