"""Enrichment: user and movie metadata from the simulator's APIs, cached in SQLite.

``MetadataClient`` speaks the API (bulk ``GET /users?ids=..`` and ``GET /movies?ids=..`` with
at most 200 ids, falling back to ``GET /user/<id>`` / ``GET /movie/<id>`` when the bulk route
is absent), retries with exponential backoff and honours ``429 Retry-After``.
``MetadataCache`` keeps what it learned (including "unknown": a 404) in ``enrichment.sqlite3``
next to the event store.  ``Enricher`` runs in a thread of its own: ingestion only hands it
ids, so an unreachable API delays enrichment and never ingestion.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

import requests
from tenacity import (
    RetryCallState,
    retry,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from services.ingest import metrics

log = logging.getLogger(__name__)

ENTITIES: Final = ("user", "movie")
MAX_BULK: Final = 200
CACHE_FILE: Final = "enrichment.sqlite3"
_SAFE: Final = "+'"  # slugs keep their + and ' in the path: the API sees the raw id


class TransientError(Exception):
    """A failure worth retrying (connection error, timeout, 429, 5xx)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def _wait(state: RetryCallState) -> float:
    """Exponential backoff, or the server's Retry-After when it sent one (capped)."""
    exc = state.outcome.exception() if state.outcome else None
    if isinstance(exc, TransientError) and exc.retry_after is not None:
        return min(max(exc.retry_after, 0.0), 60.0)
    return float(wait_exponential(multiplier=0.2, max=10.0)(state))


def _retry_after(resp: requests.Response) -> float | None:
    value = resp.headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class MetadataClient:
    """Tolerant client of the user/movie metadata API."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 5.0,
        max_attempts: int = 5,
        session: requests.Session | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.session = session or requests.Session()
        self._bulk_ok: dict[str, bool] = {}
        self._get = retry(
            retry=retry_if_exception_type(TransientError),
            wait=_wait,
            stop=stop_after_attempt(max_attempts),
            reraise=True,
        )(self._get_once)

    def _get_once(self, path: str, entity: str) -> tuple[int, Any]:
        metrics.ENRICH_REQUESTS.labels(entity).inc()
        try:
            resp = self.session.get(f"{self.base_url}{path}", timeout=self.timeout_s)
        except requests.RequestException as exc:
            metrics.ENRICH_ERRORS.labels(entity, "connection").inc()
            raise TransientError(f"{type(exc).__name__}: {exc}") from exc
        if resp.status_code == 429 or resp.status_code >= 500:
            kind = "rate_limited" if resp.status_code == 429 else "server"
            metrics.ENRICH_ERRORS.labels(entity, kind).inc()
            raise TransientError(f"HTTP {resp.status_code}", _retry_after(resp))
        if resp.status_code != 200:
            return resp.status_code, None
        try:
            return 200, resp.json()
        except ValueError:
            metrics.ENRICH_ERRORS.labels(entity, "bad_json").inc()
            return 200, None

    def fetch(self, entity: str, ids: list[Any]) -> dict[str, dict[str, Any] | None]:
        """Metadata of ``ids`` (≤ 200) by id text; None for ids the API does not know.

        Raises ``TransientError`` when the API stays unreachable after all attempts.
        """
        if len(ids) > MAX_BULK:
            raise ValueError(f"at most {MAX_BULK} ids per lookup")
        keys = [str(i) for i in ids]
        if not keys:
            return {}
        if self._bulk_ok.get(entity, True):
            # In a query string '+' means a space, so slugs are percent-encoded there.
            path = f"/{entity}s?ids=" + ",".join(quote(k, safe="") for k in keys)
            status, body = self._get(path, entity)
            if status == 200 and body is not None:
                self._bulk_ok[entity] = True
                found = _index(entity, body)
                return {k: found.get(k) for k in keys}
            if status in (404, 405) and entity not in self._bulk_ok:
                # No bulk route on this server: remember and go one by one.
                log.info("no bulk %s route; falling back to single lookups", entity)
                self._bulk_ok[entity] = False
            elif status != 200:
                metrics.ENRICH_ERRORS.labels(entity, f"http_{status}").inc()
        out: dict[str, dict[str, Any] | None] = {}
        for k in keys:
            status, body = self._get(f"/{entity}/{quote(k, safe=_SAFE)}", entity)
            out[k] = body if status == 200 and isinstance(body, dict) else None
        return out


def _id_of(entity: str, obj: Mapping[str, Any]) -> str | None:
    for key in ("user_id", "id") if entity == "user" else ("id", "movie_id"):
        if obj.get(key) is not None:
            return str(obj[key])
    return None


def _index(entity: str, body: Any) -> dict[str, dict[str, Any] | None]:
    """Accept a list of objects, ``{id: object|null}``, or ``{"<entity>s": [...]}``."""
    if isinstance(body, dict):
        inner = body.get(f"{entity}s", body.get("results", body.get("items")))
        if isinstance(inner, list | dict):
            return _index(entity, inner)
        return {
            str(k): v if isinstance(v, dict) and "error" not in v else None for k, v in body.items()
        }
    out: dict[str, dict[str, Any] | None] = {}
    if isinstance(body, list):
        for obj in body:
            if isinstance(obj, dict) and "error" not in obj:
                key = _id_of(entity, obj)
                if key is not None:
                    out[key] = obj
    return out


class MetadataCache:
    """SQLite cache of metadata by id (None = the API said unknown); safe across threads."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        for entity in ENTITIES:
            # Table names come from the fixed ENTITIES, never from input.
            self._db.execute(
                f"CREATE TABLE IF NOT EXISTS {entity}s"
                " (id TEXT PRIMARY KEY, data TEXT, fetched_ns INTEGER)"
            )
        self._db.commit()

    def put(self, entity: str, found: Mapping[str, dict[str, Any] | None]) -> None:
        """Store lookup results (None for unknown ids)."""
        now = time.time_ns()
        rows = [
            (k, None if v is None else json.dumps(v, sort_keys=True), now) for k, v in found.items()
        ]
        with self._lock:
            self._db.executemany(
                f"INSERT OR REPLACE INTO {entity}s (id, data, fetched_ns) VALUES (?, ?, ?)",  # noqa: S608
                rows,
            )
            self._db.commit()

    def known_ids(self, entity: str) -> set[str]:
        """Ids looked up already (found or unknown)."""
        with self._lock:
            return {r[0] for r in self._db.execute(f"SELECT id FROM {entity}s")}  # noqa: S608

    def get_many(self, entity: str, ids: Iterable[str]) -> dict[str, dict[str, Any] | None]:
        """Cached records of ``ids`` that were looked up (absent keys: never looked up)."""
        wanted = list(ids)
        out: dict[str, dict[str, Any] | None] = {}
        with self._lock:
            for i in range(0, len(wanted), 500):
                chunk = wanted[i : i + 500]
                q = f"SELECT id, data FROM {entity}s WHERE id IN ({','.join('?' * len(chunk))})"  # noqa: S608
                for k, data in self._db.execute(q, chunk):
                    out[k] = None if data is None else json.loads(data)
        return out

    def count(self, entity: str) -> int:
        """Ids cached (found or unknown)."""
        with self._lock:
            return int(self._db.execute(f"SELECT COUNT(*) FROM {entity}s").fetchone()[0])  # noqa: S608

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()


class Enricher:
    """Looks up ids it is handed, in bulk, in a background thread; never blocks the caller."""

    def __init__(
        self,
        client: MetadataClient,
        cache: MetadataCache,
        *,
        batch_size: int = MAX_BULK,
        rate_per_s: float = 20.0,
        max_pending: int = 2_000_000,
        on_lookup: Callable[[str, int, int], None] | None = None,
    ) -> None:
        self.client = client
        self.cache = cache
        self.batch_size = min(batch_size, MAX_BULK)
        self.min_interval_s = 1.0 / rate_per_s if rate_per_s > 0 else 0.0
        self.max_pending = max_pending
        self.on_lookup = on_lookup
        self._known = {e: cache.known_ids(e) for e in ENTITIES}
        self._pending: dict[str, dict[str, None]] = {e: {} for e in ENTITIES}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.backoff_s = 0.0
        for e in ENTITIES:
            metrics.ENRICH_CACHED.labels(e).set(len(self._known[e]))

    def submit(self, entity: str, ids: Iterable[Any]) -> int:
        """Queue ids not yet looked up; return how many were new (cheap; never blocks on I/O)."""
        known, pending = self._known[entity], self._pending[entity]
        new = 0
        with self._lock:
            for i in ids:
                k = str(i)
                if k not in known and k not in pending and len(pending) < self.max_pending:
                    pending[k] = None
                    new += 1
            metrics.ENRICH_PENDING.labels(entity).set(len(pending))
        if new:
            self._wake.set()
        return new

    def pending(self, entity: str) -> int:
        """Ids waiting for a lookup."""
        return len(self._pending[entity])

    def run_once(self) -> int:
        """Look up one batch per entity; return ids resolved (raises TransientError when down)."""
        done = 0
        for entity in ENTITIES:
            with self._lock:
                batch = list(self._pending[entity])[: self.batch_size]
            if not batch:
                continue
            ids: list[Any] = [int(b) for b in batch] if entity == "user" else batch
            found = self.client.fetch(entity, ids)
            self.cache.put(entity, found)
            unknown = sum(1 for v in found.values() if v is None)
            if self.on_lookup is not None:
                self.on_lookup(entity, len(found), unknown)
            with self._lock:
                for k in batch:
                    self._pending[entity].pop(k, None)
                    self._known[entity].add(k)
                metrics.ENRICH_PENDING.labels(entity).set(len(self._pending[entity]))
            metrics.ENRICH_CACHED.labels(entity).set(len(self._known[entity]))
            done += len(batch)
        return done

    def drain(self, deadline_s: float = 60.0) -> bool:
        """Look up everything pending in this thread (CLI use); True if nothing is left."""
        end = time.monotonic() + deadline_s
        while any(self._pending.values()) and time.monotonic() < end:
            try:
                self.run_once()
            except TransientError as exc:
                log.warning("enrichment API unavailable: %s", exc)
                return False
            if any(self._pending.values()):
                time.sleep(self.min_interval_s)
        return not any(self._pending.values())

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                done = self.run_once()
                self.backoff_s = 0.0
            except TransientError as exc:
                # The API is down or throttling: park the ids and try again later.
                self.backoff_s = min(max(self.backoff_s * 2, 1.0), 60.0)
                log.warning(
                    "enrichment API unavailable; retrying in %.0f s: %s", self.backoff_s, exc
                )
                self._stop.wait(self.backoff_s)
                continue
            except Exception:
                self.backoff_s = min(max(self.backoff_s * 2, 1.0), 60.0)
                metrics.ENRICH_ERRORS.labels("any", "unexpected").inc()
                log.exception("enrichment failed")
                self._stop.wait(self.backoff_s)
                continue
            if done:
                self._stop.wait(self.min_interval_s)
            else:
                self._wake.wait(1.0)
                self._wake.clear()

    def start(self) -> None:
        """Start the background thread."""
        self._thread = threading.Thread(target=self._loop, name="enricher", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the background thread."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
