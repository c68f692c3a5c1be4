"""Calls to the arms' recommenders on asyncio: kept-alive connections, a hard budget, strict
answer checks, and a circuit breaker per arm.

A call either returns a valid list (≤ 20 distinct movie ids, with the answer's ``X-Model-*``
headers) or a failure with one reason: ``timeout``, ``connect_error``, ``status_5xx``,
``status_4xx``, ``invalid_body`` or ``circuit_open``.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urlsplit

from services.common.events import is_movie_id

MAX_ITEMS: Final = 20
MAX_BODY: Final = 16 * 1024  # 20 ids of at most a few hundred characters each
MAX_HEAD: Final = 16 * 1024  # status line and headers of one answer
_SPACE: Final = re.compile(r"\s")
MODEL_HEADER_PREFIX: Final = "x-model-"


@dataclass(frozen=True)
class Reply:
    """The outcome of one upstream call."""

    items: tuple[str, ...] = ()
    headers: dict[str, str] = field(default_factory=dict)
    """The answer's ``X-Model-*`` headers (original case)."""
    reason: str | None = None
    """Why the call failed; None when ``items`` is a valid answer."""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when the answer can be served."""
        return self.reason is None

    @property
    def model(self) -> tuple[str | None, str | None]:
        """(model name, model version) from the headers, when both are there."""
        lower = {k.lower(): v for k, v in self.headers.items()}
        name, version = lower.get("x-model-name"), lower.get("x-model-version")
        return (name, version) if name and version else (None, None)


def check_body(body: bytes) -> tuple[str, ...] | None:
    """The movie ids of a valid answer body (1-20 distinct ids, no spaces), else None."""
    if len(body) > MAX_BODY:
        return None
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not text or _SPACE.search(text):
        return None
    ids = text.split(",")
    if len(ids) > MAX_ITEMS or len(set(ids)) != len(ids) or not all(map(is_movie_id, ids)):
        return None
    return tuple(ids)


class CircuitBreaker:
    """Closed → open after ``failures`` failures in a row; after ``cooldown_s`` one probe call
    is let through (half open): success closes the circuit, failure opens it again."""

    def __init__(
        self,
        failures: int = 5,
        cooldown_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failures = failures
        self.cooldown_s = cooldown_s
        self._now = clock
        self._lock = threading.Lock()
        self._state = "closed"
        self._fails = 0
        self._open_until = 0.0
        self._probing = False

    @property
    def state(self) -> str:
        """``closed``, ``open`` or ``half_open``."""
        with self._lock:
            if self._state == "open" and self._now() >= self._open_until:
                return "half_open"
            return self._state

    def allow(self) -> bool:
        """True when a call may go to the arm now (a half-open circuit admits one probe)."""
        with self._lock:
            if self._state == "closed":
                return True
            if self._state == "open":
                if self._now() < self._open_until:
                    return False
                self._state = "half_open"
                self._probing = False
            if self._probing:
                return False
            self._probing = True
            return True

    def record(self, ok: bool) -> None:
        """Report the outcome of an allowed call."""
        with self._lock:
            if ok:
                self._state, self._fails, self._probing = "closed", 0, False
                return
            self._fails += 1
            if self._state == "half_open" or self._fails >= self.failures:
                self._state = "open"
                self._open_until = self._now() + self.cooldown_s
                self._probing = False


class _Origin:
    """Where an arm lives: connection target and the request line's path prefix."""

    __slots__ = ("host", "host_header", "port", "prefix", "ssl")

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        self.ssl = parts.scheme == "https"
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if self.ssl else 80)
        self.prefix = parts.path.rstrip("/")
        self.host_header = parts.netloc.rsplit("@", 1)[-1]


class _Conn:
    """One kept-alive connection to an origin."""

    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    def usable(self) -> bool:
        """False once the peer has closed it (an idle keep-alive timed out on the server)."""
        return not self.reader.at_eof() and not self.writer.is_closing()

    def close(self) -> None:
        """Drop the connection (no goodbye: it may hold half an answer)."""
        self.writer.close()


class _CallFailedError(Exception):
    """A call that failed with one of the named reasons."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Upstream:
    """HTTP/1.1 client of the arms on asyncio: kept-alive connections, no retries, no redirects.

    Deliberately small: it talks to Marquee's own recommenders (``Content-Length`` answers of a
    few hundred bytes), and on the router's hot path a general client costs 4-8x more CPU per
    call than the whole routing decision (benchmarks/bench_router.py; urllib3 about 1 ms,
    aiohttp's client 0.5 ms, this 0.13 ms on this machine).  Anything unexpected in an answer
    (no length, a huge head, a bad status line) fails the call and closes the connection.
    """

    def __init__(self, *, connect_timeout_s: float = 0.05, max_idle: int = 16) -> None:
        self.connect_timeout_s = connect_timeout_s
        self.max_idle = max_idle
        self._origins: dict[str, _Origin] = {}
        self._idle: dict[str, deque[_Conn]] = {}
        self._owner: tuple[int, asyncio.AbstractEventLoop | None] = (-1, None)

    def _pool(self, base_url: str) -> deque[_Conn]:
        # Connections belong to one process and one event loop: a forked worker or a new loop
        # (tests) starts with an empty pool rather than someone else's sockets.
        owner = (os.getpid(), asyncio.get_running_loop())
        if owner != self._owner:
            self._idle = {}
            self._owner = owner
        pool = self._idle.get(base_url)
        if pool is None:
            pool = self._idle[base_url] = deque()
        return pool

    def _origin(self, base_url: str) -> _Origin:
        origin = self._origins.get(base_url)
        if origin is None:
            origin = self._origins[base_url] = _Origin(base_url)
        return origin

    async def _connect(self, origin: _Origin, budget_s: float) -> _Conn:
        try:
            async with asyncio.timeout(min(self.connect_timeout_s, budget_s)):
                reader, writer = await asyncio.open_connection(
                    origin.host, origin.port, ssl=origin.ssl or None, limit=MAX_HEAD
                )
        except TimeoutError:
            raise _CallFailedError("timeout") from None
        except OSError:
            raise _CallFailedError("connect_error") from None
        sock = writer.get_extra_info("socket")
        if sock is not None:  # one small request per call: never wait to coalesce writes
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return _Conn(reader, writer)

    async def recommend(
        self, base_url: str, user_id: int, budget_s: float, request_id: str | None = None
    ) -> Reply:
        """``GET <base_url>/recommend/<user_id>`` within ``budget_s`` seconds."""
        started = time.perf_counter()
        if budget_s <= 0.001:
            return Reply(reason="timeout")
        origin = self._origin(base_url)
        pool = self._pool(base_url)
        rid = f"X-Request-Id: {request_id}\r\n" if request_id else ""
        request = (
            f"GET {origin.prefix}/recommend/{user_id} HTTP/1.1\r\n"
            f"Host: {origin.host_header}\r\n{rid}\r\n"
        ).encode("latin-1")
        conn: _Conn | None = None
        try:
            async with asyncio.timeout(budget_s):
                while True:
                    reused = False
                    while pool:
                        candidate = pool.pop()
                        if candidate.usable():
                            conn, reused = candidate, True
                            break
                        candidate.close()
                    if conn is None:
                        conn = await self._connect(origin, budget_s)
                    try:
                        conn.writer.write(request)
                        status, headers, body, keep = await _read_answer(conn.reader)
                        break
                    except _StaleConnectionError:
                        # The server closed a kept-alive connection as we reused it: nothing
                        # was answered, so one fresh attempt is safe (a GET changes nothing).
                        conn.close()
                        conn = None
                        if not reused:
                            raise _CallFailedError("connect_error") from None
        except TimeoutError:
            if conn is not None:
                conn.close()  # the answer may still arrive on it
            return Reply(reason="timeout", seconds=time.perf_counter() - started)
        except _CallFailedError as exc:
            if conn is not None:
                conn.close()
            return Reply(reason=exc.reason, seconds=time.perf_counter() - started)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            if conn is not None:
                conn.close()
            return Reply(reason="connect_error", seconds=time.perf_counter() - started)
        if keep and len(pool) < self.max_idle:
            pool.append(conn)
        else:
            conn.close()
        seconds = time.perf_counter() - started
        if status >= 500:
            return Reply(reason="status_5xx", seconds=seconds)
        if status != 200:
            return Reply(reason="status_4xx", seconds=seconds)
        items = check_body(body)
        if items is None:
            return Reply(reason="invalid_body", seconds=seconds)
        return Reply(items=items, headers=headers, seconds=seconds)

    async def close(self) -> None:
        """Close the idle connections of this process's loop."""
        for pool in self._idle.values():
            while pool:
                pool.pop().close()


class _StaleConnectionError(Exception):
    """The connection ended before any byte of the answer."""


async def _read_answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes, bool]:
    """(status, ``X-Model-*`` headers, body, keep the connection?) of one answer."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            raise _StaleConnectionError from None
        raise
    except ConnectionResetError:
        raise _StaleConnectionError from None
    lines = head[:-4].decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    if version not in ("HTTP/1.1", "HTTP/1.0") or len(rest) < 3 or not rest[:3].isdigit():
        raise _CallFailedError("connect_error")
    status = int(rest[:3])
    length = -1
    keep = version == "HTTP/1.1"
    model: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            raise _CallFailedError("connect_error")
        key = name.strip().lower()
        value = value.strip()
        if key == "content-length":
            if not value.isdigit():
                raise _CallFailedError("connect_error")
            length = int(value)
        elif key == "connection":
            option = value.lower()
            keep = option == "keep-alive" if version == "HTTP/1.0" else option != "close"
        elif key == "transfer-encoding":
            # a recommender answers a few hundred bytes at once, with their length
            raise _CallFailedError("invalid_body")
        elif key.startswith(MODEL_HEADER_PREFIX):
            model[name.strip()] = value
    if length < 0:
        raise _CallFailedError("invalid_body")
    if length > MAX_BODY:
        # the rest is still on the wire: the caller closes the connection
        raise _CallFailedError("invalid_body")
    body = await reader.readexactly(length) if length else b""
    return status, model, body, keep
