"""The metadata client, cache and enricher against a small fake API on loopback."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, jsonify, request
from werkzeug.serving import make_server

from services.ingest.enrich import (
    CACHE_FILE,
    Enricher,
    MetadataCache,
    MetadataClient,
    TransientError,
)
from services.ingest.quality import QualityMonitor
from tests.infra import free_port

USERS = {
    i: {"user_id": i, "age": 20 + i % 50, "occupation": "writer", "gender": "F"}
    for i in range(1, 1000)
}
MOVIES = {
    "the+godfather+1972": {"id": "the+godfather+1972", "title": "The Godfather", "runtime": 175}
}


class FakeApi:
    """The simulator's contract, with knobs: bulk on/off, 429s, 500s, a log of requests."""

    def __init__(self, bulk: bool = True, bulk_shape: str = "list") -> None:
        self.bulk, self.bulk_shape = bulk, bulk_shape
        self.throttle = 0  # answer this many requests with 429 Retry-After first
        self.fail = 0  # answer this many requests with 500 first
        self.log: list[str] = []
        app = Flask("fake")

        def gate() -> Any:
            self.log.append(request.full_path)
            if self.throttle:
                self.throttle -= 1
                return jsonify(error="slow down"), 429, {"Retry-After": "0.2"}
            if self.fail:
                self.fail -= 1
                return jsonify(error="boom"), 500
            return None

        @app.get("/user/<int:uid>")
        def user(uid: int) -> Any:
            return gate() or (
                jsonify(USERS[uid]) if uid in USERS else (jsonify(error="not found"), 404)
            )

        @app.get("/movie/<mid>")
        def movie(mid: str) -> Any:
            return gate() or (
                jsonify(MOVIES[mid]) if mid in MOVIES else (jsonify(error="not found"), 404)
            )

        @app.get("/users")
        def users() -> Any:
            if not self.bulk:
                self.log.append(request.full_path)
                return jsonify(error="no route"), 404
            g = gate()
            if g:
                return g
            ids = [int(i) for i in request.args["ids"].split(",")]
            assert len(ids) <= 200
            if self.bulk_shape == "dict":
                return jsonify({str(i): USERS.get(i) for i in ids})
            return jsonify([USERS[i] for i in ids if i in USERS])

        @app.get("/movies")
        def movies() -> Any:
            if not self.bulk:
                self.log.append(request.full_path)
                return jsonify(error="no route"), 404
            g = gate()
            if g:
                return g
            ids = request.args["ids"].split(",")
            return jsonify([MOVIES[i] for i in ids if i in MOVIES])

        self.app = app


@pytest.fixture
def api() -> Iterator[tuple[FakeApi, str]]:
    fake = FakeApi()
    server = make_server("127.0.0.1", 0, fake.app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield fake, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_bulk_lookup_finds_known_and_marks_unknown(api: tuple[FakeApi, str]) -> None:
    fake, url = api
    client = MetadataClient(url)
    got = client.fetch("user", [1, 2, 5000])
    assert got["1"] == USERS[1] and got["2"] == USERS[2] and got["5000"] is None
    assert len(fake.log) == 1 and fake.log[0].startswith("/users?ids=1,2,5000")
    movies = client.fetch("movie", ["the+godfather+1972", "night+of+glass+2004"])
    assert movies == {
        "the+godfather+1972": MOVIES["the+godfather+1972"],
        "night+of+glass+2004": None,
    }
    # '+' in a query means a space: slugs go percent-encoded, the separator stays a comma.
    assert "ids=the%2Bgodfather%2B1972,night%2Bof%2Bglass%2B2004" in fake.log[-1]
    with pytest.raises(ValueError, match="200"):
        client.fetch("user", list(range(201)))


def test_dict_shaped_bulk_answers_are_understood(api: tuple[FakeApi, str]) -> None:
    fake, url = api
    fake.bulk_shape = "dict"
    got = MetadataClient(url).fetch("user", [3, 4000])
    assert got == {"3": USERS[3], "4000": None}


def test_falls_back_to_single_lookups_without_a_bulk_route(api: tuple[FakeApi, str]) -> None:
    fake, url = api
    fake.bulk = False
    client = MetadataClient(url)
    assert client.fetch("user", [1, 5000]) == {"1": USERS[1], "5000": None}
    assert client.fetch("user", [2]) == {"2": USERS[2]}
    assert fake.log == ["/users?ids=1,5000", "/user/1?", "/user/5000?", "/user/2?"]


def test_429_retry_after_and_5xx_are_retried(api: tuple[FakeApi, str]) -> None:
    fake, url = api
    fake.throttle, fake.fail = 2, 1
    started = time.monotonic()
    assert MetadataClient(url).fetch("user", [1])["1"] == USERS[1]
    assert time.monotonic() - started >= 0.4  # two Retry-After: 0.2 honoured
    assert len(fake.log) == 4


def test_an_unreachable_api_raises_transient_after_retries() -> None:
    client = MetadataClient(f"http://127.0.0.1:{free_port()}", timeout_s=0.2, max_attempts=2)
    with pytest.raises(TransientError):
        client.fetch("user", [1])


def test_enricher_batches_caches_and_never_blocks(api: tuple[FakeApi, str], tmp_path: Path) -> None:
    fake, url = api
    cache = MetadataCache(tmp_path / CACHE_FILE)
    quality = QualityMonitor(min_lines=2)
    enricher = Enricher(MetadataClient(url), cache, rate_per_s=0, on_lookup=quality.observe_lookup)
    assert enricher.submit("user", range(1, 451)) == 450
    assert enricher.submit("user", range(1, 451)) == 0  # already pending
    enricher.submit("movie", ["the+godfather+1972", "zzz+1999"])
    assert enricher.drain(10)
    user_calls = [p for p in fake.log if p.startswith("/users")]
    assert len(user_calls) == 3  # 200 + 200 + 50
    assert cache.count("user") == 450 and cache.get_many("movie", ["zzz+1999"]) == {
        "zzz+1999": None
    }
    assert quality.alerts and quality.alerts[0][0] == "unknown_movie"
    # A new enricher on the same cache knows what was looked up already.
    again = Enricher(MetadataClient(url), cache)
    assert again.submit("user", range(1, 460)) == 9


def test_enricher_thread_survives_an_api_outage(tmp_path: Path) -> None:
    port = free_port()
    fake = FakeApi()
    cache = MetadataCache(tmp_path / CACHE_FILE)
    enricher = Enricher(
        MetadataClient(f"http://127.0.0.1:{port}", timeout_s=0.2, max_attempts=1), cache
    )
    enricher.start()
    try:
        started = time.monotonic()
        enricher.submit("user", [1, 2, 3])
        assert time.monotonic() - started < 0.1  # submitting never waits for the API
        time.sleep(0.5)
        assert enricher.pending("user") == 3 and enricher.backoff_s >= 1
        server = make_server("127.0.0.1", port, fake.app, threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        deadline = time.monotonic() + 10
        while enricher.pending("user") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert cache.count("user") == 3
        server.shutdown()
    finally:
        enricher.stop()


def test_snapshot_cli_fills_metadata_from_the_api_first(
    api: tuple[FakeApi, str], tmp_path: Path
) -> None:
    from services.common.snapshot import read_snapshot
    from services.ingest.cli import main
    from tests.ingest.test_derived import ingest

    ingest(
        tmp_path / "store",
        [
            "2026-03-02T10:00:00,1,GET /data/m/the+godfather+1972/0.mpg",
            "2026-03-02T10:00:01,5000,GET /rate/night+of+glass+2004=4",
        ],
        flush_every=10,
    )
    fake, url = api
    args = ["snapshot", "--until", "2026-03-03", "--store", str(tmp_path / "store")]
    assert main([*args, "--out", str(tmp_path / "s"), "--enrich-url", url]) == 0
    snap = read_snapshot(tmp_path / "s")
    assert snap.users.to_pylist()[0] == {
        "user_id": 1,
        "age": 21,
        "gender": "F",
        "occupation": "writer",
    }
    assert snap.users.to_pylist()[1]["age"] is None  # 5000 is unknown to the API: nulls
    movies = {m["movie_id"]: m for m in snap.movies.to_pylist()}
    assert movies["the+godfather+1972"]["title"] == "The Godfather"
    assert (
        movies["night+of+glass+2004"]["title"] is None
        and movies["night+of+glass+2004"]["year"] == 2004
    )
    # With the cache filled, the API is not needed for the same bytes again.
    calls = len(fake.log)
    assert main([*args, "--out", str(tmp_path / "t"), "--no-enrich"]) == 0
    assert len(fake.log) == calls
    assert (tmp_path / "s" / "users.parquet").read_bytes() == (
        tmp_path / "t" / "users.parquet"
    ).read_bytes()
