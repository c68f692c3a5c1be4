"""Cold-start segments from the user API: a total deadline, bounded concurrency, a cache.

Only users the model does not know are looked up.  Every failure degrades to ``None`` (the
overall popularity list) and never costs a request more than one deadline:

* the deadline is total (connect, headers and a body trickled byte by byte alike): the fetch
  runs on a small pool and the request waits for it at most ``timeout_s``;
* at most ``max_in_flight`` fetches run per process; past that a look-up is skipped at once,
  so a slow API cannot tie up the serving threads;
* after an error or a missed deadline the API is skipped for a cool-down, so an outage does not
  add latency to every new user's answer.

A fetch that finishes after its deadline still fills the cache for the user's next request.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import requests

from services.common.scoring import segment_key
from services.recommender.metrics import RecommenderMetrics

log = logging.getLogger("marquee.recommender.demographics")
_NEGATIVE_TTL_S = 300.0  # a 404 user may be created soon; forget the miss sooner
_FETCH_READ_TIMEOUT_S = 2.0  # a pool thread gives up on a silent API after this


class UserDemographics:
    """Maps a user id to a cold-start segment key, or None when it cannot be known in time."""

    def __init__(
        self,
        base_url: str,
        metrics: RecommenderMetrics,
        *,
        timeout_s: float = 0.1,
        max_in_flight: int = 4,
        cache_size: int = 100_000,
        ttl_s: float = 3600.0,
        cooldown_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.metrics = metrics
        self.timeout_s = timeout_s
        self.max_in_flight = max_in_flight
        self.cache_size = cache_size
        self.ttl_s = ttl_s
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._cache: OrderedDict[int, tuple[str | None, float]] = OrderedDict()
        self._lock = threading.Lock()
        self._down_until = 0.0
        self._local = threading.local()  # one keep-alive session per pool thread
        self._slots = threading.BoundedSemaphore(max_in_flight)
        self._pool: ThreadPoolExecutor | None = None
        self._pool_pid = 0

    def _executor(self) -> ThreadPoolExecutor:
        # Threads do not survive gunicorn's fork: each worker process starts its own pool.
        with self._lock:
            if self._pool is None or self._pool_pid != os.getpid():
                self._pool = ThreadPoolExecutor(self.max_in_flight, thread_name_prefix="user-api")
                self._pool_pid = os.getpid()
            return self._pool

    def close(self) -> None:
        """Stop the look-up pool without waiting for fetches in flight."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def _session(self) -> requests.Session:
        s: requests.Session | None = getattr(self._local, "session", None)
        if s is None:
            s = requests.Session()
            self._local.session = s
        return s

    def _cached(self, user_id: int, now: float) -> tuple[bool, str | None]:
        with self._lock:
            hit = self._cache.get(user_id)
            if hit is None:
                return False, None
            if hit[1] < now:
                del self._cache[user_id]
                return False, None
            self._cache.move_to_end(user_id)
            return True, hit[0]

    def _remember(self, user_id: int, segment: str | None, ttl: float) -> None:
        if self.cache_size <= 0:
            return
        with self._lock:
            self._cache[user_id] = (segment, self._clock() + ttl)
            self._cache.move_to_end(user_id)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)

    def segment(self, user_id: int) -> str | None:
        """The user's segment key, from cache or the API; None when unknown or unavailable."""
        now = self._clock()
        found, seg = self._cached(user_id, now)
        if found:
            self.metrics.user_lookups.labels("cache_hit").inc()
            return seg
        if now < self._down_until:
            self.metrics.user_lookups.labels("skipped").inc()
            return None
        if not self._slots.acquire(blocking=False):
            self.metrics.user_lookups.labels("saturated").inc()
            return None
        try:
            future: Future[str | None] = self._executor().submit(self._fetch, user_id)
        except RuntimeError:  # the pool is shut down: the process is stopping
            self._slots.release()
            return None
        future.add_done_callback(lambda _: self._slots.release())
        try:
            return future.result(timeout=self.timeout_s)
        except FutureTimeout:
            self._down_until = self._clock() + self.cooldown_s
            self.metrics.user_lookups.labels("timeout").inc()
            log.warning(
                "user API look-up missed its deadline; serving overall popularity",
                extra={"deadline_s": self.timeout_s, "cooldown_s": self.cooldown_s},
            )
            return None

    def _fetch(self, user_id: int) -> str | None:
        """One look-up on a pool thread; remembers what it learns, even after the deadline."""
        try:
            # The request stopped waiting at its deadline; this thread may wait longer per read
            # (its slot stays taken) so that a slow answer still fills the cache.
            resp = self._session().get(
                f"{self.base_url}/user/{user_id}", timeout=(self.timeout_s, _FETCH_READ_TIMEOUT_S)
            )
            if resp.status_code == 404:
                self.metrics.user_lookups.labels("not_found").inc()
                self._remember(user_id, None, min(self.ttl_s, _NEGATIVE_TTL_S))
                return None
            resp.raise_for_status()
            seg = parse_segment(resp.json())
        except (requests.RequestException, ValueError) as exc:
            self._down_until = self._clock() + self.cooldown_s
            self.metrics.user_lookups.labels("error").inc()
            log.warning(
                "user API look-up failed; serving overall popularity",
                extra={"error": f"{type(exc).__name__}: {exc}", "cooldown_s": self.cooldown_s},
            )
            return None
        self.metrics.user_lookups.labels("fetched").inc()
        self._remember(user_id, seg, self.ttl_s)
        return seg


def parse_segment(doc: Any) -> str | None:
    """Segment key of a user-API document; None when it lacks usable fields."""
    if not isinstance(doc, dict):
        raise ValueError("user document is not an object")
    age = doc.get("age")
    gender = doc.get("gender")
    if isinstance(age, str) and age.strip().isdigit():
        age = int(age)
    if not isinstance(age, int) or isinstance(age, bool):
        age = None
    return segment_key(gender if isinstance(gender, str) else None, age)
