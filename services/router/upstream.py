"""Calls to the arms' recommenders: pooled connections, a hard budget, strict answer checks,
and a circuit breaker per arm.

A call either returns a valid list (≤ 20 distinct movie ids, with the answer's ``X-Model-*``
headers) or a failure with one reason: ``timeout``, ``connect_error``, ``status_5xx``,
``status_4xx``, ``invalid_body`` or ``circuit_open``.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

import urllib3
from urllib3.exceptions import (
    HTTPError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    TimeoutError,
)

from services.common.events import is_movie_id

MAX_ITEMS: Final = 20
MAX_BODY: Final = 16 * 1024  # 20 ids of at most a few hundred characters each
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


class Upstream:
    """HTTP client of the arms: one connection pool per process, no retries, no redirects."""

    def __init__(self, *, connect_timeout_s: float = 0.05, pool_size: int = 8) -> None:
        self.connect_timeout_s = connect_timeout_s
        self.pool_size = pool_size
        self._pid = -1
        self._pool: urllib3.PoolManager | None = None
        self._lock = threading.Lock()

    def _manager(self) -> urllib3.PoolManager:
        # Sockets must not be shared across a fork: each gunicorn worker builds its own pool.
        pid = os.getpid()
        if self._pool is None or self._pid != pid:
            with self._lock:
                if self._pool is None or self._pid != pid:
                    self._pool = urllib3.PoolManager(
                        num_pools=16,
                        maxsize=self.pool_size,
                        block=False,
                        retries=False,
                        headers={"Connection": "keep-alive"},
                    )
                    self._pid = pid
        return self._pool

    def recommend(
        self, base_url: str, user_id: int, budget_s: float, request_id: str | None = None
    ) -> Reply:
        """``GET <base_url>/recommend/<user_id>`` within ``budget_s`` seconds."""
        started = time.perf_counter()
        if budget_s <= 0.001:
            return Reply(reason="timeout")
        timeout = urllib3.Timeout(connect=min(self.connect_timeout_s, budget_s), read=budget_s)
        headers = {"X-Request-Id": request_id} if request_id else None
        try:
            resp = self._manager().request(
                "GET",
                f"{base_url}/recommend/{user_id}",
                headers=headers,
                timeout=timeout,
                redirect=False,
                preload_content=False,
            )
        except NewConnectionError:
            return Reply(reason="connect_error", seconds=time.perf_counter() - started)
        except (ReadTimeoutError, TimeoutError):
            return Reply(reason="timeout", seconds=time.perf_counter() - started)
        except (ProtocolError, HTTPError, OSError):
            return Reply(reason="connect_error", seconds=time.perf_counter() - started)
        try:
            body = resp.read(MAX_BODY + 1)
        except (ReadTimeoutError, TimeoutError):
            resp.close()
            return Reply(reason="timeout", seconds=time.perf_counter() - started)
        except (ProtocolError, HTTPError, OSError):
            resp.close()
            return Reply(reason="connect_error", seconds=time.perf_counter() - started)
        if len(body) > MAX_BODY:
            resp.close()  # the rest is still on the wire: do not put the connection back
        else:
            resp.release_conn()
        seconds = time.perf_counter() - started
        if seconds > budget_s:  # bytes trickled in past the budget: the answer is too late
            return Reply(reason="timeout", seconds=seconds)
        if resp.status >= 500:
            return Reply(reason="status_5xx", seconds=seconds)
        if resp.status != 200:
            return Reply(reason="status_4xx", seconds=seconds)
        items = check_body(body)
        if items is None:
            return Reply(reason="invalid_body", seconds=seconds)
        model_headers = {
            k: v for k, v in resp.headers.items() if k.lower().startswith(MODEL_HEADER_PREFIX)
        }
        return Reply(items=items, headers=model_headers, seconds=seconds)
