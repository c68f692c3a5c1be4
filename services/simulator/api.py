"""The user and movie APIs as plain classes: lookups, a per-client rate limit, faults."""

from __future__ import annotations

import threading
import time
from typing import Any, Final

import numpy as np

from services.common.service import InvalidUserIdError, parse_user_id
from services.simulator.world import World

MAX_BULK: Final = 200


class Directory:
    """Answers user and movie look-ups as (HTTP status, JSON document)."""

    def __init__(self, world: World) -> None:
        self.world = world

    @staticmethod
    def _error(code: int, reason: str) -> tuple[int, dict[str, Any]]:
        return code, {"error": reason}

    def user(self, text: str) -> tuple[int, dict[str, Any]]:
        """``/user/<id>``: 400 for an id that is not a positive integer, 404 for an unknown one."""
        try:
            uid = parse_user_id(text)
        except InvalidUserIdError as exc:
            return self._error(400, str(exc))
        if not self.world.has_user(uid):
            return self._error(404, f"no user {uid}")
        return 200, self.world.user_json(uid)

    def movie(self, movie_id: str) -> tuple[int, dict[str, Any]]:
        """``/movie/<id>``: 404 for an unknown id."""
        i = self.world.catalog.index.get(movie_id)
        if i is None:
            return self._error(404, f"no movie {movie_id[:80]!r}")
        return 200, self.world.catalog.to_json(i)

    def _ids(self, raw: str | None) -> list[str] | tuple[int, dict[str, Any]]:
        if not raw:
            return self._error(400, "give ids=<id>,<id>,... (up to 200)")
        ids = raw.split(",")
        if len(ids) > MAX_BULK:
            return self._error(400, f"{len(ids)} ids; at most {MAX_BULK} per request")
        return ids

    def users(self, raw: str | None) -> tuple[int, dict[str, Any]]:
        """``/users?ids=1,2``: found documents plus the ids that are not users."""
        ids = self._ids(raw)
        if isinstance(ids, tuple):
            return ids
        found, missing = [], []
        for t in ids:
            code, doc = self.user(t)
            (found.append(doc) if code == 200 else missing.append(t))
        return 200, {"users": found, "not_found": missing}

    def movies(self, raw: str | None) -> tuple[int, dict[str, Any]]:
        """``/movies?ids=a,b``: found documents plus the ids that are not movies."""
        # An unescaped '+' in a query string decodes to a space; slugs never hold spaces.
        ids = self._ids(raw.replace(" ", "+") if raw else raw)
        if isinstance(ids, tuple):
            return ids
        found, missing = [], []
        for t in ids:
            code, doc = self.movie(t)
            (found.append(doc) if code == 200 else missing.append(t))
        return 200, {"movies": found, "not_found": missing}


class RateLimiter:
    """Token bucket per client: ``rate`` requests/s with bursts up to ``burst`` (0 = off)."""

    def __init__(self, rate: float, burst: int, clock: Any = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def allow(self, client: str) -> bool:
        """Take one token for ``client``; False when it has none left."""
        if self.rate <= 0:
            return True
        now = self.clock()
        with self._lock:
            tokens, last = self._buckets.get(client, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            ok = tokens >= 1.0
            self._buckets[client] = (tokens - 1.0 if ok else tokens, now)
            if len(self._buckets) > 100_000:  # forget idle clients rather than grow forever
                self._buckets.clear()
            return bool(ok)


class Faults:
    """Injected API errors (500) and slow answers, at configured rates; seeded."""

    def __init__(self, error_rate: float, slow_rate: float, slow_ms: int, seed: int) -> None:
        self.error_rate = error_rate
        self.slow_rate = slow_rate
        self.slow_ms = slow_ms
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Lock()

    def draw(self) -> tuple[bool, float]:
        """(answer with an error?, seconds to stall first)."""
        if self.error_rate <= 0 and self.slow_rate <= 0:
            return False, 0.0
        with self._lock:
            a, b = self._rng.random(2)
        return bool(a < self.error_rate), self.slow_ms / 1000 if b < self.slow_rate else 0.0
