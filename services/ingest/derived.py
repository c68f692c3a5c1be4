"""Derived tables computed from the committed segments with pyarrow; deterministic by sorting.

- ``watch_increments``: per (user, movie, hour) the distinct minutes first streamed in that hour
  (the snapshot's ``interactions`` table: a consumer can cut it at any whole hour and sum).
- ``rating_events``: every rating, one per (user, movie, time) (the snapshot's ``ratings``).
- ``watch_sessions``: per (user, movie) distinct minutes watched, max minute, first/last time.
- ``latest_ratings``: the latest rating per (user, movie) (ties broken by Kafka position).
- ``recommendations``: every recommendation request with status, latency and served list
  (the monitor's input), exact duplicate lines removed.
- ``users_table`` / ``movies_table``: one row per id seen in events, enriched from the cache.

Each takes an ``EventStore`` and optional ``since_ns`` / ``until_ns`` (``since <= time < until``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from services.common.snapshot import SCHEMAS as SNAPSHOT_SCHEMAS
from services.common.store import STREAM_KINDS as KINDS  # not our exposures
from services.ingest.enrich import MetadataCache
from services.ingest.store import EventStore

_YEAR_RE: Final = re.compile(r"\+(\d{4})$")
WATCH_GRAIN_NS: Final = 3_600 * 1_000_000_000
"""Snapshot watches are aggregated per hour: about one row per viewing session, not per line."""


SESSIONS_SCHEMA: Final = pa.schema(
    [
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field("movie_id", pa.string(), nullable=False),
        pa.field("minutes", pa.int32(), nullable=False),  # distinct minutes streamed
        pa.field("max_minute", pa.int32(), nullable=False),
        pa.field("first_ns", pa.int64(), nullable=False),
        pa.field("last_ns", pa.int64(), nullable=False),
    ]
)


def watch_increments(
    store: EventStore,
    *,
    until_ns: int | None = None,
    since_ns: int | None = None,
    grain_ns: int = WATCH_GRAIN_NS,
) -> pa.Table:
    """Per (user, movie, ``grain_ns`` bucket): distinct minutes first streamed in it, the largest.

    Each minute counts once, at the first time it was streamed, and a row's ``time_ns`` is the
    earliest such time in its bucket.  Buckets are aligned to the epoch, so the rows of a
    (user, movie) before any cut-off that is a multiple of ``grain_ns`` sum to its distinct
    minutes before that cut-off: whoever reads a snapshot can aggregate a period without seeing
    minutes from after it (the trainer snaps its cut-offs to the grain).  Rows come in no
    particular order (``services.common.snapshot.conform`` sorts them).
    """
    t = store.read(
        "watch",
        columns=["user_id", "movie_id", "minute", "time_ns"],
        until_ns=until_ns,
        since_ns=since_ns,
    )
    schema = SNAPSHOT_SCHEMAS["interactions"]
    if t.num_rows == 0:
        return schema.empty_table()
    first = t.group_by(["user_id", "movie_id", "minute"], use_threads=False).aggregate(
        [("time_ns", "min")]
    )
    bucket = first["time_ns_min"]
    if grain_ns > 1:
        # floor to the grain: integer division, and stream times are positive (after 1970)
        bucket = pc.multiply(pc.divide(bucket, grain_ns), grain_ns)
    first = first.append_column("bucket", bucket)
    g = first.group_by(["user_id", "movie_id", "bucket"], use_threads=False).aggregate(
        [("minute", "count"), ("minute", "max"), ("time_ns_min", "min")]
    )
    out = pa.table(
        {
            "user_id": g["user_id"],
            "movie_id": g["movie_id"],
            "time_ns": g["time_ns_min_min"],
            "minutes": g["minute_count"].cast(pa.int32()),
            "max_minute": g["minute_max"].cast(pa.int32()),
        }
    )
    # unsorted: millions of rows, and write_snapshot sorts every table by its key anyway
    return out.cast(schema)


def watch_sessions(
    store: EventStore, *, until_ns: int | None = None, since_ns: int | None = None
) -> pa.Table:
    """Per (user, movie): distinct minutes, max minute, first and last watch time."""
    t = store.read(
        "watch",
        columns=["user_id", "movie_id", "minute", "time_ns"],
        until_ns=until_ns,
        since_ns=since_ns,
    )
    if t.num_rows == 0:
        return SESSIONS_SCHEMA.empty_table()
    # A minute streamed twice (a duplicate line or a re-watch) counts once in ``minutes``.
    g = t.group_by(["user_id", "movie_id"], use_threads=False).aggregate(
        [
            ("minute", "count_distinct"),
            ("minute", "max"),
            ("time_ns", "min"),
            ("time_ns", "max"),
        ]
    )
    out = pa.table(
        {
            "user_id": g["user_id"],
            "movie_id": g["movie_id"],
            "minutes": g["minute_count_distinct"].cast(pa.int32()),
            "max_minute": g["minute_max"].cast(pa.int32()),
            "first_ns": g["time_ns_min"],
            "last_ns": g["time_ns_max"],
        }
    )
    return out.cast(SESSIONS_SCHEMA).sort_by([("user_id", "ascending"), ("movie_id", "ascending")])


def _last_per_key(table: pa.Table, keys: list[str], order: list[str]) -> pa.Table:
    """Rows that are last of their ``keys`` group when sorted by ``keys + order``."""
    t = table.sort_by([(k, "ascending") for k in keys + order])
    n = t.num_rows
    if n == 0:
        return t
    last = np.ones(n, dtype=bool)
    same = np.ones(n - 1, dtype=bool)
    for k in keys:
        col = t[k].to_numpy(zero_copy_only=False)
        same &= col[1:] == col[:-1]
    last[:-1] = ~same
    return t.filter(pa.array(last))


def latest_ratings(
    store: EventStore, *, until_ns: int | None = None, since_ns: int | None = None
) -> pa.Table:
    """The latest rating per (user, movie), as the snapshot's ``ratings`` table."""
    t = store.read(
        "rate",
        columns=["user_id", "movie_id", "rating", "time_ns", "partition", "offset"],
        until_ns=until_ns,
        since_ns=since_ns,
    )
    t = _last_per_key(t, ["user_id", "movie_id"], ["time_ns", "partition", "offset"])
    return t.select(SNAPSHOT_SCHEMAS["ratings"].names).cast(SNAPSHOT_SCHEMAS["ratings"])


def rating_events(
    store: EventStore, *, until_ns: int | None = None, since_ns: int | None = None
) -> pa.Table:
    """Every rating, one per (user, movie, time), as the snapshot's ``ratings`` table.

    A re-rating keeps the earlier rating beside it, so a period that ends before the re-rating
    still has the value the user gave then; two ratings at the same time: the later in Kafka.
    """
    t = store.read(
        "rate",
        columns=["user_id", "movie_id", "rating", "time_ns", "partition", "offset"],
        until_ns=until_ns,
        since_ns=since_ns,
    )
    t = _last_per_key(t, ["user_id", "movie_id", "time_ns"], ["partition", "offset"])
    return t.select(SNAPSHOT_SCHEMAS["ratings"].names).cast(SNAPSHOT_SCHEMAS["ratings"])


RECOMMENDATIONS_SCHEMA: Final = pa.schema(
    [
        pa.field("time_ns", pa.int64(), nullable=False),
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field("host", pa.string(), nullable=False),
        pa.field("status", pa.int16(), nullable=False),
        pa.field("ok", pa.bool_(), nullable=False),
        pa.field("response_time_ms", pa.int32(), nullable=False),
        pa.field("n_results", pa.int32(), nullable=False),
        pa.field("result", pa.list_(pa.string()), nullable=False),
        pa.field("error", pa.string()),
        pa.field("partition", pa.int32(), nullable=False),
        pa.field("offset", pa.int64(), nullable=False),
    ]
)


def recommendations(
    store: EventStore, *, until_ns: int | None = None, since_ns: int | None = None
) -> pa.Table:
    """Every recommendation request (status, latency, served list), in time order.

    An exact duplicate line (same time, user, host, status, latency and list) is one request
    logged twice, so only its first copy (by Kafka position) is kept.
    """
    t = store.read("recommendation", until_ns=until_ns, since_ns=since_ns)
    if t.num_rows:
        t = t.sort_by(
            [("time_ns", "ascending"), ("partition", "ascending"), ("offset", "ascending")]
        )
        keys = ["time_ns", "user_id", "host", "status", "response_time_ms"]
        n = t.num_rows
        dup = np.ones(n - 1, dtype=bool) if n > 1 else np.zeros(0, dtype=bool)
        for k in keys:
            col = t[k].to_numpy(zero_copy_only=False)
            dup &= col[1:] == col[:-1]
        if dup.any():
            results = t["result"].to_pylist()
            errors = t["error"].to_pylist()
            idx = np.nonzero(dup)[0]
            keep = np.ones(n, dtype=bool)
            for i in idx:
                if results[i + 1] == results[i] and errors[i + 1] == errors[i]:
                    keep[i + 1] = False
            t = t.filter(pa.array(keep))
    return pa.table(
        {
            "time_ns": t["time_ns"],
            "user_id": t["user_id"],
            "host": t["host"],
            "status": t["status"],
            "ok": pc.equal(t["status"], 200),
            "response_time_ms": t["response_time_ms"],
            "n_results": pc.list_value_length(t["result"]).cast(pa.int32()),
            "result": t["result"],
            "error": t["error"],
            "partition": t["partition"],
            "offset": t["offset"],
        },
        schema=RECOMMENDATIONS_SCHEMA,
    )


def user_ids(store: EventStore, *, until_ns: int | None = None) -> pa.Array:
    """Sorted distinct user ids of all events before ``until_ns``."""
    parts = [store.read(k, columns=["user_id"], until_ns=until_ns)["user_id"] for k in KINDS]
    chunks = [c for p in parts for c in p.chunks]
    if not chunks:
        return pa.array([], pa.int64())
    return pc.unique(pa.chunked_array(chunks, pa.int64())).sort()


def movie_ids(store: EventStore, *, until_ns: int | None = None) -> pa.Array:
    """Sorted distinct movie ids of watch and rate events before ``until_ns``."""
    parts = [
        store.read(k, columns=["movie_id"], until_ns=until_ns)["movie_id"]
        for k in ("watch", "rate")
    ]
    chunks = [c for p in parts for c in p.chunks]
    if not chunks:
        return pa.array([], pa.string())
    return pc.unique(pa.chunked_array(chunks, pa.string())).sort()


def _int(v: Any) -> int | None:
    try:
        return int(float(v)) if v not in (None, "", "null") else None
    except (TypeError, ValueError):
        return None


def _float(v: Any) -> float | None:
    try:
        f = float(v) if v not in (None, "", "null") else None
    except (TypeError, ValueError):
        return None
    return f if f is None or np.isfinite(f) else None


def _str(v: Any) -> str | None:
    return str(v) if v not in (None, "", "null") else None


def slug_year(movie_id: str) -> int | None:
    """The release year at the end of a movie slug (``the+godfather+1972`` -> 1972), if any."""
    m = _YEAR_RE.search(movie_id)
    return int(m.group(1)) if m else None


def users_table(ids: Iterable[int], cache: MetadataCache | None) -> pa.Table:
    """The snapshot's ``users`` table: one row per id, metadata or nulls."""
    keys = [int(i) for i in ids]
    meta = cache.get_many("user", (str(k) for k in keys)) if cache is not None else {}
    age, gender, occ = [], [], []
    for k in keys:
        m = meta.get(str(k)) or {}
        a = _int(m.get("age"))
        age.append(a if a is not None and 0 <= a < 32_768 else None)
        gender.append(_str(m.get("gender")))
        occ.append(_str(m.get("occupation")))
    return pa.table(
        {"user_id": keys, "age": age, "gender": gender, "occupation": occ},
        schema=SNAPSHOT_SCHEMAS["users"],
    )


def _genres(v: Any) -> list[str] | None:
    if not isinstance(v, list):
        return None
    out = []
    for g in v:
        name = g.get("name") if isinstance(g, dict) else g
        if isinstance(name, str):
            out.append(name)
    return out


def movies_table(ids: Iterable[str], cache: MetadataCache | None) -> pa.Table:
    """The snapshot's ``movies`` table: one row per id; year from metadata or else the slug."""
    keys = list(ids)
    meta = cache.get_many("movie", keys) if cache is not None else {}
    cols: dict[str, list[Any]] = {n: [] for n in SNAPSHOT_SCHEMAS["movies"].names}
    for k in keys:
        m = meta.get(k) or {}
        year = _int(str(m.get("release_date") or "")[:4]) or slug_year(k)
        cols["movie_id"].append(k)
        cols["title"].append(_str(m.get("title")))
        cols["year"].append(year if year is not None and 0 < year < 32_768 else None)
        cols["genres"].append(_genres(m.get("genres")))
        cols["original_language"].append(_str(m.get("original_language")))
        rt = _int(m.get("runtime"))
        cols["runtime"].append(rt if rt is not None and 0 <= rt < 2**31 else None)
        cols["popularity"].append(_float(m.get("popularity")))
        cols["vote_average"].append(_float(m.get("vote_average")))
        cols["vote_count"].append(_int(m.get("vote_count")))
    return pa.table(cols, schema=SNAPSHOT_SCHEMAS["movies"])
