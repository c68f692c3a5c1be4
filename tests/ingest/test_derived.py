"""Derived tables and training snapshots: correct, and the same bytes for the same --until."""

from __future__ import annotations

import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import pyarrow as pa

from services.common.events import parse, parse_time
from services.common.snapshot import SCHEMAS, read_snapshot
from services.ingest import derived
from services.ingest.core import Ingestor
from services.ingest.enrich import CACHE_FILE, MetadataCache
from services.ingest.snapshots import build_snapshot, parse_until
from services.ingest.store import EventStore
from tests.infra import ROOT
from tests.ingest.streamgen import lines

Rec = namedtuple("Rec", "offset value timestamp")


def ingest(path: Path, values: list[str], flush_every: int, partitions: int = 3) -> EventStore:
    """Ingest ``values`` round-robin over partitions, flushing every ``flush_every`` lines."""
    ing = Ingestor(EventStore(path, writer=True))
    per: dict[int, list[Rec]] = {p: [] for p in range(partitions)}
    for i, v in enumerate(values):
        p = i % partitions
        per[p].append(Rec(len(per[p]), v.encode(), 0))
    pos = dict.fromkeys(per, 0)
    while any(pos[p] < len(per[p]) for p in per):
        for p in per:
            ing.add(p, per[p][pos[p] : pos[p] + flush_every])
            pos[p] += flush_every
        ing.flush()
    ing.store.close()
    return EventStore(path)


T = "2026-03-02T10:00:0"
SMALL = [
    f"{T}0,1,GET /data/m/the+godfather+1972/0.mpg",
    f"{T}1,1,GET /data/m/the+godfather+1972/1.mpg",
    f"{T}2,1,GET /data/m/the+godfather+1972/1.mpg",  # the same minute again: counted once
    f"{T}3,1,GET /data/m/the+godfather+1972/7.mpg",
    f"{T}4,2,GET /data/m/untitled+project+/3.mpg",
    f"{T}5,1,GET /rate/the+godfather+1972=3",
    f"{T}6,1,GET /rate/the+godfather+1972=5",  # the latest rating wins
    f"{T}7,2,GET /rate/the+godfather+1972=2",
    f"{T}8,3,recommendation request r:8082, status 200, result: a+1999, b+2000, 25 ms",
    f"{T}8,3,recommendation request r:8082, status 200, result: a+1999, b+2000, 25 ms",
    f"{T}9,4,recommendation request r:8082, status 0, result: java.net.ConnectException: refused,"
    " 1 ms",
    "2026-03-02T11:00:00,5,GET /create_account",
]


def test_derived_tables_are_correct(tmp_path: Path) -> None:
    store = ingest(tmp_path, SMALL, flush_every=2, partitions=1)
    s = derived.watch_sessions(store).to_pylist()
    t0 = parse(SMALL[0]).time_ns  # type: ignore[union-attr]
    assert s == [
        {"user_id": 1, "movie_id": "the+godfather+1972", "minutes": 3, "max_minute": 7,
         "first_ns": t0, "last_ns": t0 + 3_000_000_000},
        {"user_id": 2, "movie_id": "untitled+project+", "minutes": 1, "max_minute": 3,
         "first_ns": t0 + 4_000_000_000, "last_ns": t0 + 4_000_000_000},
    ]  # fmt: skip
    r = derived.latest_ratings(store).to_pylist()
    assert [(x["user_id"], x["rating"]) for x in r] == [(1, 5), (2, 2)]
    rec = derived.recommendations(store).to_pylist()
    assert [(x["user_id"], x["ok"], x["n_results"], x["response_time_ms"]) for x in rec] == [
        (3, True, 2, 25),
        (4, False, 0, 1),
    ]
    assert rec[1]["error"] == "java.net.ConnectException: refused"
    until = parse_until("2026-03-02T10:00:04")
    assert len(derived.watch_sessions(store, until_ns=until).to_pylist()) == 1
    assert derived.user_ids(store).to_pylist() == [1, 2, 3, 4, 5]
    assert derived.movie_ids(store).to_pylist() == ["the+godfather+1972", "untitled+project+"]


def test_users_and_movies_rows_exist_with_nulls_and_use_metadata_when_known(tmp_path: Path) -> None:
    cache = MetadataCache(tmp_path / CACHE_FILE)
    cache.put(
        "user", {"1": {"user_id": 1, "age": 27, "gender": "M", "occupation": "writer"}, "2": None}
    )
    cache.put(
        "movie",
        {
            "the+godfather+1972": {
                "id": "the+godfather+1972", "title": "The Godfather", "release_date": "1972-03-14",
                "genres": [{"id": 18, "name": "Drama"}, {"id": 80, "name": "Crime"}],
                "original_language": "en", "runtime": 175, "popularity": "41.1",
                "vote_average": "8.5", "vote_count": "6024",
            }
        },
    )  # fmt: skip
    users = derived.users_table([1, 2, 3], cache).to_pylist()
    assert users[0] == {"user_id": 1, "age": 27, "gender": "M", "occupation": "writer"}
    assert users[1] == {"user_id": 2, "age": None, "gender": None, "occupation": None}
    movies = derived.movies_table(["the+godfather+1972", "night+of+glass+2004", "untitled+"], cache)
    assert movies.schema == SCHEMAS["movies"]
    m = movies.to_pylist()
    assert m[0]["genres"] == ["Drama", "Crime"] and m[0]["vote_count"] == 6024
    assert m[0]["popularity"] == 41.1 and m[0]["year"] == 1972 and m[0]["runtime"] == 175
    assert m[1] == {"movie_id": "night+of+glass+2004", "title": None, "year": 2004, "genres": None,
                    "original_language": None, "runtime": None, "popularity": None,
                    "vote_average": None, "vote_count": None}  # fmt: skip
    assert m[2]["year"] is None


def test_snapshot_is_deterministic_across_runs_and_flush_patterns(tmp_path: Path) -> None:
    values = lines(20_000, seed=7)
    a = ingest(tmp_path / "a", values, flush_every=1_000)
    b = ingest(tmp_path / "b", values, flush_every=3_333)
    until = parse_until("2026-03-02T00:20:00")
    m1 = build_snapshot(a, tmp_path / "s1", until)
    m2 = build_snapshot(a, tmp_path / "s2", until)
    m3 = build_snapshot(b, tmp_path / "s3", until)
    for name in (
        "interactions.parquet",
        "ratings.parquet",
        "users.parquet",
        "movies.parquet",
        "manifest.json",
    ):
        assert (tmp_path / "s1" / name).read_bytes() == (tmp_path / "s2" / name).read_bytes()
        assert (tmp_path / "s1" / name).read_bytes() == (tmp_path / "s3" / name).read_bytes()
    assert m1 == m2 == m3
    snap = read_snapshot(tmp_path / "s1")
    assert snap.interactions.num_rows > 0 and snap.ratings.num_rows > 0
    assert snap.manifest["time_range"]["max_ns"] < until
    later = build_snapshot(a, tmp_path / "s4", parse_until("2026-03-02T00:40:00"))
    assert later["content_hash"] != m1["content_hash"]


def test_snapshot_cli_writes_the_same_bytes_twice(tmp_path: Path) -> None:
    ingest(tmp_path / "store", lines(3_000, seed=8), flush_every=500)
    outs = []
    for name in ("x", "y"):
        r = subprocess.run(
            [sys.executable, "-m", "services.ingest", "snapshot", "--until", "2026-03-02T00:05:00",
             "--out", str(tmp_path / name), "--store", str(tmp_path / "store")],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        outs.append({p.name: p.read_bytes() for p in (tmp_path / name).iterdir()})
    assert outs[0] == outs[1]
    r = subprocess.run(
        [sys.executable, "-m", "services.ingest", "stats", "--store", str(tmp_path / "store")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0 and '"watch"' in r.stdout
    r = subprocess.run(
        [sys.executable, "-m", "services.ingest", "derived", "recommendations", "--out",
         str(tmp_path / "reco.parquet"), "--store", str(tmp_path / "store")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr


def test_parse_until_accepts_times_dates_and_ns() -> None:
    ns = parse_time("2026-03-02T00:00:00")[0]  # type: ignore[index]
    assert (
        parse_until("2026-03-02")
        == ns
        == parse_until("2026-03-02T00:00:00")
        == parse_until(str(ns))
    )
    assert isinstance(pa.scalar(ns), pa.Int64Scalar)
