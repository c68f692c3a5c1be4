"""Cold-start segments from the user API: a tight timeout, a bounded cache and a cool-down.

Only users the model does not know are looked up.  Every failure degrades to ``None`` (the
overall popularity list) and never costs more than one timeout: after an error the API is
skipped for a cool-down, so an outage does not add latency to every new user's answer.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import requests

from services.common.scoring import segment_key
from services.recommender.metrics import RecommenderMetrics

log = logging.getLogger("marquee.recommender.demographics")
_NEGATIVE_TTL_S = 300.0  # a 404 user may be created soon; forget the miss sooner


class UserDemographics:
    """Maps a user id to a cold-start segment key, or None when it cannot be known in time."""

    def __init__(
        self,
        base_url: str,
        metrics: RecommenderMetrics,
        *,
        timeout_s: float = 0.1,
        cache_size: int = 100_000,
        ttl_s: float = 3600.0,
        cooldown_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.metrics = metrics
        self.timeout_s = timeout_s
        self.cache_size = cache_size
        self.ttl_s = ttl_s
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._cache: OrderedDict[int, tuple[str | None, float]] = OrderedDict()
        self._lock = threading.Lock()
        self._down_until = 0.0
        self._local = threading.local()  # one keep-alive session per thread

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
        try:
            resp = self._session().get(
                f"{self.base_url}/user/{user_id}", timeout=(self.timeout_s, self.timeout_s)
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
