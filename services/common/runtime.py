"""Process plumbing every service shares: BLAS pinning, a graceful stop, flags over settings.

Nothing here imports Flask or numpy, so a CLI can call ``pin_blas_threads`` before either.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterable, Mapping
from types import FrameType
from typing import Any, Final, TypeVar

from pydantic_settings import BaseSettings

log = logging.getLogger("marquee.runtime")

BLAS_THREAD_VARS: Final = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
LOOPBACK_HOSTS: Final = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})

S = TypeVar("S", bound=BaseSettings)


def pin_blas_threads(n: int = 1) -> None:
    """Cap BLAS/OpenMP threads (unless the environment already says); call before numpy loads."""
    # Each service runs several workers or threads on few cores: BLAS threads on top would
    # oversubscribe them, and one small matrix product is fastest single-threaded anyway.
    for var in BLAS_THREAD_VARS:
        os.environ.setdefault(var, str(n))


def is_loopback(host: str) -> bool:
    """True when ``host`` only accepts connections from this machine."""
    return host in LOOPBACK_HOSTS or host.startswith("127.")


def split_bind(bind: str) -> tuple[str, int]:
    """``host:port`` (host may be ``[::1]``) as (host, port); ValueError when malformed."""
    host, sep, port = bind.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65_535:
        raise ValueError(f"bind must be host:port, got {bind!r}")
    return host, int(port)


def bind_problem(bind: str) -> str | None:
    """Why a server could not listen on ``host:port`` now (one line), or None when it could.

    A server checks this before it touches anything shared (a metrics folder, a pid file), so
    a second start on a busy port fails without harming the server that owns the port.
    """
    import socket

    try:
        host, port = split_bind(bind)
    except ValueError as exc:
        return str(exc)
    host = host.strip("[]")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        return f"cannot resolve {host}: {exc.strerror or exc}"
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # The options gunicorn binds with: a port in TIME_WAIT is free, a listening one is not.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(addr)
        except OSError as exc:
            return f"cannot listen on {bind}: {exc.strerror or exc}"
    return None


class GracefulStop:
    """An event set by SIGTERM or SIGINT: loops check it and finish their work, then exit."""

    def __init__(self, signals: Iterable[signal.Signals] = (signal.SIGTERM, signal.SIGINT)) -> None:
        self.event = threading.Event()
        self.signum: int | None = None
        for sig in signals:
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        log.info("signal received; finishing in-flight work and stopping", extra={"signal": signum})
        self.signum = signum
        self.event.set()

    def is_set(self) -> bool:
        """True once a stop was asked for."""
        return self.event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until a stop is asked for or ``timeout`` passes; True when asked."""
        return self.event.wait(timeout)


def settings_from_flags(
    cls: type[S],
    args: argparse.Namespace,
    flags: Mapping[str, str],
    *,
    export: bool = False,
    **fixed: object,
) -> S:
    """``cls`` from the environment with every flag that was given winning over it.

    ``flags`` maps argparse destinations to settings fields; flags left at None keep the
    environment's value.  ``export`` also writes the given flags to the environment, for a
    server whose config is read again after ``exec`` (gunicorn).
    """
    update: dict[str, Any] = {k: v for k, v in fixed.items() if v is not None}
    for flag, field in flags.items():
        value = getattr(args, flag, None)
        if value is not None:
            update[field] = value
    if export:
        prefix = str(cls.model_config.get("env_prefix", ""))
        for field, value in update.items():
            os.environ[f"{prefix}{field.upper()}"] = str(value)
    return cls(**update)


WorkerHook = Callable[..., None]


def gunicorn_worker_hooks(app_module: str) -> tuple[WorkerHook, WorkerHook, WorkerHook]:
    """gunicorn's ``post_worker_init``, ``worker_exit`` and ``child_exit`` for a service app.

    ``app_module`` has ``runtime_of(app)`` with ``start()`` and ``stop()``.  It is imported only
    inside the hooks: the config file runs before prometheus_client may be imported.
    """
    import importlib

    def runtime(wsgi: Any) -> Any:
        return importlib.import_module(app_module).runtime_of(wsgi)

    def post_worker_init(worker: Any) -> None:
        """Start the app's background work in each worker (threads do not survive fork)."""
        runtime(worker.wsgi).start()

    def worker_exit(server: Any, worker: Any) -> None:
        """Stop background work, so a graceful shutdown finishes what is in flight."""
        wsgi = getattr(worker, "wsgi", None)
        if wsgi is not None:
            runtime(wsgi).stop()

    def child_exit(server: Any, worker: Any) -> None:
        """Drop a dead worker's live gauges from the multiprocess aggregate."""
        from services.common.metrics import mark_worker_dead

        mark_worker_dead(worker.pid)

    return post_worker_init, worker_exit, child_exit
