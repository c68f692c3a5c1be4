"""Derived tables and training snapshots: correct, and the same bytes for the same --until."""

from __future__ import annotations

import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import pyarrow as pa
import pytest

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
        # the Kafka record time of a line produced live: its own event time (in ms)
        e = parse(v)
        ms = getattr(e, "time_ns", 0) // 1_000_000
        per[p].append(Rec(len(per[p]), v.encode(), ms))
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


@pytest.mark.parametrize("grain_s", [1, 60, 600])
def test_training_period_holds_nothing_from_after_its_cut_off(tmp_path: Path, grain_s: int) -> None:
    """Store → snapshot → trainer split: train's minutes and ratings are those before the cut.

    Whatever the snapshot's watch grain (this stream spans about half an hour; the default is an
    hour), the trainer's cut-off falls on a grain edge and nothing after it reaches training.
    """
    from services.trainer import data as td

    values = lines(20_000, seed=11, users=40)  # few users: sessions and re-ratings span periods
    store = ingest(tmp_path / "store", values, flush_every=2_500)
    until = parse_until("2026-03-03T00:00:00")
    grain = grain_s * 1_000_000_000
    build_snapshot(store, tmp_path / "snap", until, watch_grain_ns=grain)
    tables, provenance = td.load_source(str(tmp_path / "snap"))
    p = td.prepare(tables, provenance, 0.3, 0.2)
    cut = p.info["cutoffs_ns"]["val"]
    assert cut % grain == 0
    td.check_disjoint(p)

    # the oracle, straight from the raw events: first watch of a pair before the cut, and the
    # distinct minutes it streamed before the cut; the latest rating before the cut
    first: dict[tuple[int, str], int] = {}
    minutes: dict[tuple[int, str], set[int]] = {}
    for e in store.read("watch").to_pylist():
        key = (e["user_id"], e["movie_id"])
        first[key] = min(first.get(key, e["time_ns"]), e["time_ns"])
        if e["time_ns"] < cut:
            minutes.setdefault(key, set()).add(e["minute"])
    rated: dict[tuple[int, str], tuple[int, int, int, int]] = {}
    for e in store.read("rate").to_pylist():
        if e["time_ns"] < cut:
            key = (e["user_id"], e["movie_id"])
            at = (e["time_ns"], e["partition"], e["offset"], e["rating"])
            rated[key] = max(rated.get(key, at), at)
    train = p.periods["train"]
    got = {
        (int(p.user_ids[u]), str(p.item_ids[i])): m
        for u, i, m in zip(train.inter_user, train.inter_item, train.inter_minutes, strict=True)
    }
    assert got == {k: float(len(v)) for k, v in minutes.items() if first[k] < cut}
    later = {
        (e["user_id"], e["movie_id"])
        for e in store.read("watch").to_pylist()
        if e["time_ns"] >= cut and first[(e["user_id"], e["movie_id"])] < cut
    }
    assert later  # sessions that go on past the cut-off exist, so the check above bites
    got_r = {
        (int(p.user_ids[u]), str(p.item_ids[i])): v
        for u, i, v in zip(train.rate_user, train.rate_item, train.rate_value, strict=True)
    }
    assert got_r == {k: float(v[3]) for k, v in rated.items()}
    rerated = {
        (e["user_id"], e["movie_id"])
        for e in store.read("rate").to_pylist()
        if e["time_ns"] >= cut and (e["user_id"], e["movie_id"]) in rated
    }
    assert rerated  # ratings changed after the cut-off exist: training keeps the earlier value


def test_watch_increments_are_about_one_row_per_session_per_grain(tmp_path: Path) -> None:
    """An hour's grain folds a session's lines into one row, minutes counted once each."""
    from services.ingest.derived import WATCH_GRAIN_NS, watch_increments

    store = ingest(tmp_path / "store", lines(20_000, seed=3, users=40), flush_every=5_000)
    watches = store.read("watch")
    fine = watch_increments(store, grain_ns=1)
    hourly = watch_increments(store, grain_ns=WATCH_GRAIN_NS)
    users, movies = watches["user_id"].to_pylist(), watches["movie_id"].to_pylist()
    pairs = len(set(zip(users, movies, strict=True)))
    assert pairs <= hourly.num_rows <= 2 * pairs < fine.num_rows
    distinct = len(set(zip(users, movies, watches["minute"].to_pylist(), strict=True)))
    assert pa.compute.sum(hourly["minutes"]).as_py() == distinct
    assert pa.compute.sum(fine["minutes"]).as_py() == distinct
