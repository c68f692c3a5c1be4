"""Cold-start segments from the user API: served when fast, skipped when slow or down."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from services.common.artifacts import Manifest
from services.recommender.app import create_app, runtime_of
from services.recommender.demographics import UserDemographics, parse_segment
from services.recommender.metrics import RecommenderMetrics
from tests.recommender.conftest import settings_for


class FakeUsers:
    """A loopback user API: ids below 10**12 exist; ``delay`` slows every answer, ``drip``
    sends the body one byte at a time with that many seconds between bytes."""

    def __init__(self) -> None:
        self.hits = 0
        self.delay = 0.0
        self.drip = 0.0
        self.in_flight = 0
        self.max_in_flight = 0
        lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with lock:
                    fake.hits += 1
                    fake.in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                try:
                    self._answer()
                finally:
                    with lock:
                        fake.in_flight -= 1

            def _answer(self) -> None:
                time.sleep(fake.delay)
                uid = int(self.path.rsplit("/", 1)[-1])
                if uid >= 10**12:
                    self.send_response(404)
                    self.end_headers()
                    return
                body = json.dumps({"user_id": uid, "age": 27, "gender": "F"}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not fake.drip:
                    self.wfile.write(body)
                    return
                for i in range(len(body)):  # every read is quick; the whole answer is not
                    self.wfile.write(body[i : i + 1])
                    self.wfile.flush()
                    time.sleep(fake.drip)

            def log_message(self, *args: object) -> None:
                pass

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: object, client_address: object) -> None:
                pass  # a client that timed out closed the socket: expected, not news

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True).start()


@pytest.fixture
def users() -> Iterator[FakeUsers]:
    """A running fake user API."""
    fake = FakeUsers()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


def test_parse_segment() -> None:
    assert parse_segment({"age": 27, "gender": "F"}) == "F|young_adult"
    assert parse_segment({"age": "61", "gender": "M"}) == "M|senior"
    assert parse_segment({"age": None, "gender": "x"}) == "U|unknown"
    with pytest.raises(ValueError, match="not an object"):
        parse_segment([1, 2])


def test_unknown_user_gets_segment_list_and_it_is_cached(
    registry_root: Path, svd_v1: Manifest, users: FakeUsers
) -> None:
    app = create_app(settings_for(registry_root, users_api_url=users.url))
    scorer = runtime_of(app).holder.current.scorer  # type: ignore[union-attr]
    client = app.test_client()
    expected = scorer.ids(scorer.segments["F|young_adult"][:20])
    assert expected != scorer.ids(scorer.popular[:20])
    for _ in range(3):
        assert client.get("/recommend/5000").data.decode().split(",") == expected
    assert users.hits == 1, "later answers come from the cache"
    client.get("/recommend/7")  # a known user needs no look-up
    assert users.hits == 1
    client.get(f"/recommend/{10**12}")  # 404: overall popularity
    assert client.get(f"/recommend/{10**12}").data.decode().split(",") == scorer.ids(
        scorer.popular[:20]
    )
    assert users.hits == 2


def test_slow_user_api_costs_one_timeout_then_is_skipped(
    registry_root: Path, svd_v1: Manifest, users: FakeUsers
) -> None:
    users.delay = 1.0
    app = create_app(settings_for(registry_root, users_api_url=users.url, users_api_timeout_s=0.05))
    scorer = runtime_of(app).holder.current.scorer  # type: ignore[union-attr]
    client = app.test_client()
    started = time.perf_counter()
    first = client.get("/recommend/5001")
    assert time.perf_counter() - started < 0.4
    assert first.status_code == 200
    assert first.data.decode().split(",") == scorer.ids(scorer.popular[:20])
    started = time.perf_counter()
    for uid in range(5002, 5012):  # cool-down: no more waiting on a struggling API
        assert client.get(f"/recommend/{uid}").status_code == 200
    assert time.perf_counter() - started < 0.2
    assert users.hits == 1
    body = client.get("/metrics").data.decode()
    assert 'marquee_recommender_user_lookups_total{result="timeout"} 1.0' in body
    assert 'marquee_recommender_user_lookups_total{result="skipped"} 10.0' in body


def test_a_trickling_user_api_cannot_stretch_the_deadline(users: FakeUsers) -> None:
    """The deadline is total: a body sent byte by byte, each byte within a socket timeout, is
    still cut off at the deadline; the late answer fills the cache for next time."""
    users.drip = 0.03  # about 50 bytes: 1.5 s in all, every read well under 0.1 s
    metrics = RecommenderMetrics()
    demo = UserDemographics(users.url, metrics, timeout_s=0.1, cooldown_s=0.0)
    started = time.perf_counter()
    assert demo.segment(5000) is None
    assert time.perf_counter() - started < 0.4
    assert metrics.user_lookups.labels("timeout")._value.get() == 1
    deadline = time.monotonic() + 5
    while demo._cached(5000, demo._clock()) != (True, "F|young_adult"):
        assert time.monotonic() < deadline, "the late answer never reached the cache"
        time.sleep(0.05)
    assert demo.segment(5000) == "F|young_adult"
    assert users.hits == 1
    demo.close()


def test_many_unknown_users_at_once_cannot_tie_up_the_workers(
    registry_root: Path, svd_v1: Manifest, users: FakeUsers
) -> None:
    """Concurrent look-ups are bounded: past the bound an unknown user gets the overall list
    at once, and known users are never held up."""
    users.delay = 1.0
    app = create_app(
        settings_for(
            registry_root,
            users_api_url=users.url,
            users_api_timeout_s=0.1,
            users_api_concurrency=2,
            users_api_cooldown_s=0.0,
        )
    )
    scorer = runtime_of(app).holder.current.scorer  # type: ignore[union-attr]
    popular = scorer.ids(scorer.popular[:20])

    def get(uid: int) -> tuple[int, list[str], float]:
        started = time.perf_counter()
        resp = app.test_client().get(f"/recommend/{uid}")
        return resp.status_code, resp.data.decode().split(","), time.perf_counter() - started

    with ThreadPoolExecutor(9) as pool:
        unknown = [pool.submit(get, uid) for uid in range(6000, 6008)]
        known = pool.submit(get, 7)
        results = [f.result() for f in unknown]
        known_code, _, known_s = known.result()
    assert [code for code, _, _ in results] == [200] * 8
    assert all(items == popular for _, items, _ in results)
    assert max(s for _, _, s in results) < 0.5, "every answer within the deadline and then some"
    assert known_code == 200 and known_s < 0.5
    assert users.max_in_flight <= 2 and users.hits <= 2
    lookups = runtime_of(app).metrics.user_lookups
    timeouts = lookups.labels("timeout")._value.get()
    saturated = lookups.labels("saturated")._value.get()
    assert timeouts + saturated == 8 and saturated >= 6
    runtime_of(app).stop()


def test_unreachable_user_api_falls_back_to_overall_popularity(
    registry_root: Path, svd_v1: Manifest
) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(settings_for(registry_root, users_api_url=f"http://127.0.0.1:{port}"))
    scorer = runtime_of(app).holder.current.scorer  # type: ignore[union-attr]
    resp = app.test_client().get("/recommend/5000")
    assert resp.status_code == 200
    assert resp.data.decode().split(",") == scorer.ids(scorer.popular[:20])


def test_cache_is_bounded_least_recently_used_first(users: FakeUsers) -> None:
    demo = UserDemographics(users.url, RecommenderMetrics(), cache_size=2)
    for uid in (1, 2, 1, 3):  # 3 evicts 2, the least recently used
        assert demo.segment(uid) == "F|young_adult"
    assert users.hits == 3
    demo.segment(1)
    assert users.hits == 3, "1 is still cached"
    demo.segment(2)
    assert users.hits == 4, "2 was evicted"
    assert len(demo._cache) == 2
