"""The HTTP shell every Marquee service is built on: ops probes, errors, ids, request logs.

A service app is ``create_app(settings)`` plus these pieces::

    app = Flask("marquee-x")
    register_error_handlers(app, style="json")      # one-line 4xx bodies, never a 500 for input
    register_request_log(app, access_log)           # X-Request-Id and one JSON line per request
    app.register_blueprint(ops_blueprint(ready))    # /healthz, /readyz, /metrics
    app.register_blueprint(the_service_routes)

Routes call ``parse_user_id`` and let ``InvalidUserIdError`` propagate: it becomes a 400.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, Final, Literal

from flask import Blueprint, Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from services.common.events import MAX_USER_ID
from services.common.metrics import exposition

__all__ = [
    "CLIENT_TIME_HEADER",
    "PROBE_PATHS",
    "TEXT",
    "BackgroundServer",
    "InvalidUserIdError",
    "Ready",
    "always_ready",
    "health_answer",
    "log_request",
    "one_line",
    "ops_blueprint",
    "parse_user_id",
    "readiness_answer",
    "register_error_handlers",
    "register_request_log",
    "request_id_of",
]

log = logging.getLogger("marquee.service")

Ready = Callable[[], tuple[bool, str]]
"""Readiness check: (ready?, one-line detail)."""
Style = Literal["text", "json"]

PROBE_PATHS: Final = frozenset({"/healthz", "/readyz", "/metrics"})
CLIENT_TIME_HEADER: Final = "X-Marquee-Client-Time"
"""The caller's clock at a ``/recommend`` call, ns since the epoch: the simulator sends it, and
a router with ``trust_client_time`` stamps the exposure with it (a world faster than the wall)."""
TEXT: Final = "text/plain; charset=utf-8"
_DIGITS: Final = re.compile(r"[0-9]+")  # ASCII only: str.isdigit() also accepts '²' or '٣'
_MAX_ID_CHARS: Final = 64  # leading zeros are tolerated, megabytes of them are not
_REQUEST_ID: Final = re.compile(r"[A-Za-z0-9._:-]{1,64}")


class InvalidUserIdError(ValueError):
    """A user id that is not a positive 64-bit decimal integer; the message says why."""


def parse_user_id(text: str) -> int:
    """The user id in ``text`` (1..MAX_USER_ID), or InvalidUserIdError with a one-line reason."""
    if not text:
        raise InvalidUserIdError("missing user id")
    if text.startswith("-") and _DIGITS.fullmatch(text[1:65]):
        raise InvalidUserIdError("user id must be positive")
    if not _DIGITS.fullmatch(text):
        shown = text if len(text) <= 40 and text.isprintable() else "(not shown)"
        raise InvalidUserIdError(f"user id must be a positive decimal integer, got {shown!r}")
    if len(text) > _MAX_ID_CHARS:
        raise InvalidUserIdError("user id is too long")
    value = int(text)
    if value == 0:
        raise InvalidUserIdError("user id must be positive")
    if value > MAX_USER_ID:
        raise InvalidUserIdError("user id is out of range")
    return value


def always_ready() -> tuple[bool, str]:
    """Readiness of a service that is ready once its app exists."""
    return True, "serving"


def health_answer(ok: bool) -> tuple[dict[str, str], int]:
    """The ``/healthz`` body and status every service answers."""
    return {"status": "ok" if ok else "unhealthy"}, 200 if ok else 503


def readiness_answer(ok: bool, detail: str) -> tuple[dict[str, str], int]:
    """The ``/readyz`` body and status every service answers."""
    return {"status": "ready" if ok else "not ready", "detail": detail}, 200 if ok else 503


def request_id_of(header: str | None) -> str:
    """The caller's ``X-Request-Id`` when it is a sane token, else a fresh one."""
    return header if header and _REQUEST_ID.fullmatch(header) else uuid.uuid4().hex


def one_line(code: int, message: str) -> str:
    """The first line of an error message (the status code when there is none)."""
    return message.splitlines()[0] if message else str(code)


def ops_blueprint(
    ready: Ready = always_ready,
    *,
    metrics: Callable[[], tuple[bytes, str]] = exposition,
    healthy: Callable[[], bool] = lambda: True,
) -> Blueprint:
    """``/healthz`` (alive), ``/readyz`` (may take traffic), ``/metrics`` (Prometheus).

    Every service answers the probes in one shape: ``{"status": ..., "detail": ...}`` with 200
    or 503.  ``metrics`` renders the exposition (the process registry unless given).
    """
    bp = Blueprint("ops", __name__)

    @bp.get("/healthz")
    def healthz() -> tuple[Response, int]:
        body, status = health_answer(healthy())
        return jsonify(body), status

    @bp.get("/readyz")
    def readyz() -> tuple[Response, int]:
        body, status = readiness_answer(*ready())
        return jsonify(body), status

    @bp.get("/metrics")
    def prometheus() -> Response:
        body, content_type = metrics()
        return Response(body, content_type=content_type)

    return bp


def error_response(code: int, message: str, style: Style) -> Response:
    """A one-line error body: ``{"error": message}`` or plain text."""
    line = one_line(code, message)
    if style == "json":
        resp = jsonify(error=line)
        resp.status_code = code
        return resp
    return Response(line, status=code, content_type=TEXT)


def register_error_handlers(
    app: Flask,
    *,
    style: Style = "json",
    on_error: Callable[[int], None] | None = None,
) -> None:
    """One-line 4xx bodies for every HTTP error and bad user id; 500 only for real bugs.

    ``on_error(status)`` runs for every error answer (a service counts them by route there).
    """

    def answer(code: int, message: str) -> Response:
        if on_error is not None:
            on_error(code)
        return error_response(code, message, style)

    @app.errorhandler(InvalidUserIdError)
    def _bad_user_id(exc: InvalidUserIdError) -> Response:
        return answer(400, str(exc))

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        code = exc.code or 500
        message = f"{code} {exc.name}".lower() if style == "text" else (exc.description or exc.name)
        resp = answer(code, message)
        if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
            resp.headers["Allow"] = ", ".join(exc.valid_methods)
        return resp

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("unhandled error", extra={"path": request.path})
        return answer(500, "internal error")


def register_request_log(app: Flask, access_log: logging.Logger, *, enabled: bool = True) -> None:
    """Echo or mint ``X-Request-Id``; log one JSON line per request (probes at DEBUG).

    A route may add fields to its line by setting ``g.log_fields``.
    """

    @app.before_request
    def _begin() -> None:
        g.started = time.perf_counter()
        g.request_id = request_id_of(request.headers.get("X-Request-Id"))

    @app.after_request
    def _finish(resp: Response) -> Response:
        rid = g.get("request_id") or uuid.uuid4().hex
        resp.headers["X-Request-Id"] = rid
        if not enabled:
            return resp
        log_request(
            access_log,
            request_id=rid,
            method=request.method,
            path=request.path,
            status=resp.status_code,
            started=g.get("started", 0.0),
            remote_addr=request.remote_addr,
            fields=g.get("log_fields"),
        )
        return resp


def log_request(
    access_log: logging.Logger,
    *,
    request_id: str,
    method: str,
    path: str,
    status: int,
    started: float,
    remote_addr: str | None,
    fields: dict[str, Any] | None = None,
) -> None:
    """One JSON access-log line (probes at DEBUG); ``started`` is a ``perf_counter`` value."""
    level = logging.DEBUG if path in PROBE_PATHS else logging.INFO
    if access_log.isEnabledFor(level):
        line: dict[str, Any] = {
            "request_id": request_id,
            "method": method,
            "path": path,
            "status": status,
            "duration_ms": round((time.perf_counter() - started) * 1e3, 3),
            "remote_addr": remote_addr,
            **(fields or {}),
        }
        access_log.log(level, "request", extra=line)


class BackgroundServer:
    """A production WSGI server (waitress) on a thread of its own, beside a main loop.

    For an ops port next to a consumer loop: gunicorn wants the main thread and its signals,
    and Werkzeug's server is for development (no request limits, no worker pool).  waitress
    is pure Python, bounds its worker threads and runs happily off the main thread.
    """

    def __init__(self, app: Any, host: str, port: int, *, threads: int = 2) -> None:
        from waitress import wasyncore  # type: ignore[import-untyped]
        from waitress.server import create_server  # type: ignore[import-untyped]

        self._map: dict[int, Any] = {}
        self._close_all = wasyncore.close_all
        self._server: Any = create_server(
            app,
            map=self._map,
            host=host,
            port=port,
            threads=threads,
            ident="marquee",
            connection_limit=64,  # probes and scrapes only: a flood must not eat the process
            channel_timeout=30,
        )
        self.host: str = str(self._server.effective_host)
        self.port: int = int(self._server.effective_port)
        self._thread = threading.Thread(target=self._server.run, name="ops-http", daemon=True)

    def start(self) -> BackgroundServer:
        """Serve in the background; returns self."""
        self._thread.start()
        return self

    def close(self, timeout: float = 5.0) -> None:
        """Stop accepting, let the loop end, and join the threads (at most ``timeout``)."""
        if self._thread.is_alive():
            # The loop thread owns the socket map: close it there, through waitress's trigger.
            self._server.trigger.pull_trigger(lambda: self._close_all(self._map))
            self._thread.join(timeout)
        else:
            self._close_all(self._map)
        self._server.task_dispatcher.shutdown(timeout=timeout)
