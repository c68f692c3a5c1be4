"""Who the streaming service asks for recommendations: a team's HTTP server or a built-in.

A recommender answers a batch of users with one ``RecoAnswer`` each.  Built-ins (oracle,
popularity, random) run in-process so tests compare list quality without HTTP; the HTTP
client speaks the contract: ``GET <target>/recommend/<user>``, 600 ms, plain-text answer.
"""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import repeat
from typing import Any, Final, Protocol
from urllib.parse import urlsplit

import numpy as np
import numpy.typing as npt
import requests
from urllib3.exceptions import ProtocolError

from services.common.events import is_movie_id
from services.common.service import CLIENT_TIME_HEADER
from services.simulator.world import World

MAX_LIST: Final = 20


@dataclass(frozen=True)
class RecoAnswer:
    """What one call returned: status (0 = timeout/refused), the list, and what to log."""

    status: int
    movies: tuple[int, ...]
    """Movie indices the user sees (empty when the answer was unusable)."""
    logged: tuple[str, ...]
    """Movie ids written in the recommendation line (status 200)."""
    error: str | None
    ms: int
    malformed: str | None = None
    """Why a 200 answer was rejected (spaces, json, too_many, duplicates, unknown_id...)."""


class Recommender(Protocol):
    """Anything that answers the streaming service's recommendation calls."""

    host: str

    def recommend(self, user_ids: npt.NDArray[np.int64], t_ns: int) -> list[RecoAnswer]:
        """One answer per user, in order."""
        ...


_SPACE_RE: Final = re.compile(r"\s")


def parse_answer(
    text: str, index: dict[str, int]
) -> tuple[tuple[int, ...], tuple[str, ...], str | None]:
    """Parse a plain-text answer into (movie indices, ids to log, reason it is malformed)."""
    if text.startswith(("[", "{", '"')):
        return (), (), "json"
    if _SPACE_RE.search(text):
        return (), (), "whitespace"
    if not text:
        return (), (), "empty"
    ids = text.split(",")
    loggable = tuple(ids) if all(is_movie_id(m) for m in ids) else ()
    if len(ids) > MAX_LIST:
        return (), loggable, "too_many"
    if len(set(ids)) != len(ids):
        return (), loggable, "duplicates"
    if not loggable:
        return (), (), "bad_id"
    movies = tuple(index.get(m, -1) for m in ids)
    if -1 in movies:
        return (), loggable, "unknown_id"
    return movies, loggable, None


class HttpRecommender:
    """Calls ``<target>/recommend/<user>`` with the contract's timeout, concurrently."""

    def __init__(
        self, target: str, world: World, timeout_ms: int = 600, host: str = "", workers: int = 32
    ) -> None:
        self.target = target.rstrip("/")
        parts = urlsplit(self.target)
        self.host = host or parts.netloc or self.target
        self._hostname = parts.hostname or "localhost"
        self._port = parts.port or 80
        self.timeout_ms = timeout_ms
        self.index = world.catalog.index
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="reco")
        self._session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=workers)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)

    def _one(self, user_id: int, t_ns: int = 0) -> RecoAnswer:
        t0 = time.perf_counter()
        # The world's clock at the call: a router told to trust it stamps its exposure with it,
        # so a world running faster than the wall clock keeps exposures and watches on one clock.
        headers = {CLIENT_TIME_HEADER: str(t_ns)} if t_ns > 0 else None
        budget_s = self.timeout_ms / 1000
        attempt = 0
        while True:
            try:
                r = self._session.get(
                    f"{self.target}/recommend/{user_id}",
                    timeout=max(0.001, budget_s - (time.perf_counter() - t0)),
                    headers=headers,
                )
                ms = int((time.perf_counter() - t0) * 1000)
                break
            except requests.Timeout:
                ms = max(self.timeout_ms, int((time.perf_counter() - t0) * 1000))
                err = (
                    "java.util.concurrent.TimeoutException: Request timeout to "
                    f"{self._hostname}/{self._hostname}:{self._port} after {self.timeout_ms} ms"
                )
                return RecoAnswer(0, (), (), err, ms)
            except requests.ConnectionError as exc:
                # A kept-alive connection the server closed (its idle timeout) just as it was
                # reused: nothing was answered, so one fresh attempt within the same budget is
                # safe for a GET, as HTTP clients do; a refused connection is not retried.
                if attempt == 0 and isinstance(exc.args[0] if exc.args else None, ProtocolError):
                    attempt += 1
                    continue
                ms = int((time.perf_counter() - t0) * 1000)
                return RecoAnswer(0, (), (), "java.net.ConnectException: Connection refused", ms)
        if ms > self.timeout_ms:  # the client gave up even if bytes trickled in late
            err = (
                "java.util.concurrent.TimeoutException: Request timeout to "
                f"{self._hostname}/{self._hostname}:{self._port} after {self.timeout_ms} ms"
            )
            return RecoAnswer(0, (), (), err, ms)
        if r.status_code != 200:
            text = " ".join(r.text.split())[:120] or r.reason or "error"
            return RecoAnswer(r.status_code, (), (), f"HTTP {r.status_code}: {text}", ms)
        movies, logged, bad = parse_answer(r.text, self.index)
        return RecoAnswer(200, movies, logged, None, ms, bad)

    def recommend(self, user_ids: npt.NDArray[np.int64], t_ns: int) -> list[RecoAnswer]:
        """Call the target for every user concurrently; answers come back in order."""
        return list(self._pool.map(self._one, (int(u) for u in user_ids), repeat(t_ns)))

    def close(self) -> None:
        """Stop the worker threads."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._session.close()


class _Builtin:
    host = "builtin:8082"

    def __init__(self, world: World, k: int = MAX_LIST, seed: int = 0) -> None:
        self.world = world
        self.k = k
        self.rng = np.random.default_rng(seed)

    def _lists(self, user_ids: npt.NDArray[np.int64], t_ns: int) -> npt.NDArray[np.int64]:
        raise NotImplementedError

    def recommend(self, user_ids: npt.NDArray[np.int64], t_ns: int) -> list[RecoAnswer]:
        """Lists for every user; response times are drawn, so runs stay deterministic."""
        if len(user_ids) == 0:
            return []
        lists = self._lists(user_ids, t_ns)
        ms = self.rng.integers(5, 60, len(user_ids))
        ids = self.world.catalog.ids
        return [
            RecoAnswer(200, tuple(int(m) for m in row), tuple(ids[m] for m in row), None, int(t))
            for row, t in zip(lists.tolist(), ms.tolist(), strict=True)
        ]


class OracleRecommender(_Builtin):
    """Top-k by true taste (as of the call time): the best any model could do."""

    host = "oracle:8082"
    memory: Any = None
    """The engine's ``WatchMemory`` (set by the engine): finished movies are left out."""

    def _lists(self, user_ids: npt.NDArray[np.int64], t_ns: int) -> npt.NDArray[np.int64]:
        done = None if self.memory is None else self.memory.movies[user_ids - 1]
        return self.world.true_top_k_batch(user_ids, self.k, t_ns, exclude=done)


class PopularityRecommender(_Builtin):
    """The same top-k most popular movies for everyone."""

    host = "popularity:8082"

    def _lists(self, user_ids: npt.NDArray[np.int64], t_ns: int) -> npt.NDArray[np.int64]:
        top = np.argsort(-self.world.catalog.popularity, kind="stable")[: self.k]
        return np.broadcast_to(top, (len(user_ids), len(top)))


class RandomRecommender(_Builtin):
    """k distinct movies uniformly at random."""

    host = "random:8082"

    def _lists(self, user_ids: npt.NDArray[np.int64], t_ns: int) -> npt.NDArray[np.int64]:
        m = len(self.world.catalog)
        keys = self.rng.random((len(user_ids), m))
        return np.argpartition(keys, self.k - 1, axis=1)[:, : self.k]


BUILTINS: Final = {
    "oracle": OracleRecommender,
    "popularity": PopularityRecommender,
    "random": RandomRecommender,
}


def make_recommender(
    target: str, world: World, timeout_ms: int = 600, host: str = "", seed: int = 0
) -> Recommender | None:
    """``builtin:<name>``, an ``http(s)://`` URL, or ``""``/``none`` for no recommender."""
    if not target or target == "none":
        return None
    if target.startswith("builtin:"):
        name = target.split(":", 1)[1]
        if name not in BUILTINS:
            raise ValueError(f"unknown builtin recommender {name!r}; known: {sorted(BUILTINS)}")
        rec = BUILTINS[name](world, seed=seed)
        if host:
            rec.host = host
        return rec
    if target.startswith(("http://", "https://")):
        return HttpRecommender(target, world, timeout_ms, host)
    raise ValueError(f"target must be http(s)://host:port or builtin:<name>, got {target!r}")
