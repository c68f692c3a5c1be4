"""Recommendation calls: parsing answers, HTTP statuses, timeouts, refused connections."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest
from flask import Flask, Response, request
from werkzeug.serving import make_server

from services.common.events import RecommendationEvent, format_line, parse
from services.common.service import CLIENT_TIME_HEADER
from services.simulator.recommenders import (
    HttpRecommender,
    OracleRecommender,
    PopularityRecommender,
    RandomRecommender,
    make_recommender,
    parse_answer,
)
from services.simulator.world import World
from tests.infra import free_port


def test_parse_answer_accepts_the_contract(small_world: World) -> None:
    ids = small_world.catalog.ids[:20]
    movies, logged, bad = parse_answer(",".join(ids), small_world.catalog.index)
    assert bad is None and logged == tuple(ids) and movies == tuple(range(20))


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda ids: ", ".join(ids[:3]), "whitespace"),
        (lambda ids: ",".join(ids[:3]) + "\n", "whitespace"),
        (lambda ids: '["' + ids[0] + '"]', "json"),
        (lambda ids: ",".join(ids[:21]), "too_many"),
        (lambda ids: ",".join([ids[0], ids[1], ids[0]]), "duplicates"),
        (lambda ids: ids[0] + ",no+such+movie+1900", "unknown_id"),
        (lambda ids: ids[0] + ",NOT A SLUG", "whitespace"),
        (lambda ids: ids[0] + ",Bad!Slug", "bad_id"),
        (lambda ids: "", "empty"),
    ],
)
def test_parse_answer_rejects_malformed(small_world: World, make: object, reason: str) -> None:
    text = make(small_world.catalog.ids)  # type: ignore[operator]
    movies, _, bad = parse_answer(text, small_world.catalog.index)
    assert movies == () and bad == reason


def test_builtins_give_twenty_distinct_known_movies(small_world: World) -> None:
    users = np.array([1, 2, 3])
    for cls in (OracleRecommender, PopularityRecommender, RandomRecommender):
        for a in cls(small_world, seed=1).recommend(users, 0):
            assert a.status == 200 and len(set(a.movies)) == 20
    oracle = OracleRecommender(small_world).recommend(users, 0)[0]
    assert list(oracle.logged) == small_world.true_top_k(1, 20)
    with pytest.raises(ValueError, match="builtin"):
        make_recommender("builtin:psychic", small_world)
    with pytest.raises(ValueError, match="target"):
        make_recommender("ftp://x", small_world)
    assert make_recommender("", small_world) is None


@pytest.fixture(scope="module")
def server(small_world: World) -> Iterator[str]:
    """A tiny recommender with a route per behaviour, on a loopback port of its own."""
    app = Flask("fake-recommender")
    ids = small_world.catalog.ids
    seen = CLOCKS

    @app.get("/good/recommend/<int:user>")
    def good(user: int) -> Response:
        return Response(",".join(ids[user % 50 : user % 50 + 20]), mimetype="text/plain")

    @app.get("/slow/recommend/<int:user>")
    def slow(user: int) -> Response:
        time.sleep(0.9)
        return Response(ids[0], mimetype="text/plain")

    @app.get("/broken/recommend/<int:user>")
    def broken(user: int) -> tuple[str, int]:
        return "boom, really: broken\nsecond line", 500

    @app.get("/clock/recommend/<int:user>")
    def clock(user: int) -> Response:
        # echoes the caller's clock header back as the first "movie" position, for the test
        seen.append(request.headers.get(CLIENT_TIME_HEADER))
        return Response(ids[0], mimetype="text/plain")

    @app.get("/spaces/recommend/<int:user>")
    def spaces(user: int) -> Response:
        return Response(", ".join(ids[:5]), mimetype="text/plain")

    srv = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_port}"
    srv.shutdown()


def _line(answer: object, user: int = 7) -> RecommendationEvent:
    a = answer
    ev = RecommendationEvent(10**18, user, "h:8082", a.status, a.logged, a.error, a.ms, 3)  # type: ignore[attr-defined]
    parsed = parse(format_line(ev))
    assert isinstance(parsed, RecommendationEvent), format_line(ev)
    return parsed


def test_http_answers_map_to_contract_statuses(small_world: World, server: str) -> None:
    users = np.array([3, 4])
    good = HttpRecommender(f"{server}/good", small_world)
    a = good.recommend(users, 0)
    assert [x.status for x in a] == [200, 200] and len(a[0].movies) == 20
    assert _line(a[0]).result == a[0].logged

    slow = HttpRecommender(f"{server}/slow", small_world).recommend(users[:1], 0)[0]
    assert slow.status == 0 and slow.ms >= 600
    assert "TimeoutException" in (slow.error or "") and "after 600 ms" in (slow.error or "")
    assert _line(slow).error == slow.error

    refused = HttpRecommender(f"http://127.0.0.1:{free_port()}", small_world)
    r = refused.recommend(users[:1], 0)[0]
    assert r.status == 0 and r.error == "java.net.ConnectException: Connection refused"

    b = HttpRecommender(f"{server}/broken", small_world).recommend(users[:1], 0)[0]
    assert b.status == 500 and "\n" not in (b.error or "")
    assert _line(b).status == 500

    sp = HttpRecommender(f"{server}/spaces", small_world).recommend(users[:1], 0)[0]
    assert sp.status == 200 and sp.movies == () and sp.malformed == "whitespace"
    assert _line(sp).result == ()
    for rec in (good, refused):
        rec.close()


CLOCKS: list[str | None] = []


def test_http_calls_carry_the_worlds_clock(small_world: World, server: str) -> None:
    """The simulated call time goes along, so a trusting router stamps exposures with it."""
    rec = HttpRecommender(f"{server}/clock", small_world)
    CLOCKS.clear()
    rec.recommend(np.array([3, 4]), 1_772_400_000_000_000_000)
    rec.recommend(np.array([5]), 0)  # no clock known: no header
    assert sorted(CLOCKS, key=str) == ["1772400000000000000", "1772400000000000000", None]
    rec.close()


class ClosingServer:
    """A raw HTTP/1.1 server that drops kept-alive connections without answering.

    Each connection's first request is answered (keep-alive); a later request on the same
    connection is read and the connection closed with no answer: what a server's idle timeout
    does when it fires as the client reuses the connection.  ``never_answer`` closes every
    connection unanswered.
    """

    def __init__(self, body: str, never_answer: bool = False) -> None:
        import socket

        self.body = body.encode()
        self.never_answer = never_answer
        self.connections = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                conn.recv(65536)
                if self.never_answer:
                    continue
                head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(self.body)}\r\n\r\n".encode()
                conn.sendall(head + self.body)
                conn.recv(65536)  # the next request on this connection: closed unanswered

    def close(self) -> None:
        self.sock.close()


def test_a_kept_alive_connection_closed_as_it_is_reused_is_retried_once(
    small_world: World,
) -> None:
    ids = small_world.catalog.ids
    srv = ClosingServer(",".join(ids[:20]))
    rec = HttpRecommender(srv.url, small_world, workers=1)
    try:
        first, second = (rec.recommend(np.array([u]), 0)[0] for u in (3, 4))
        assert first.status == 200 and second.status == 200, second.error
        assert second.logged == tuple(ids[:20])
        assert srv.connections == 2, "the second call reused the first connection, then retried"
    finally:
        rec.close()
        srv.close()


def test_a_server_that_never_answers_is_retried_once_then_reported(small_world: World) -> None:
    srv = ClosingServer("", never_answer=True)
    rec = HttpRecommender(srv.url, small_world, workers=1)
    try:
        a = rec.recommend(np.array([3]), 0)[0]
        assert a.status == 0 and a.error == "java.net.ConnectException: Connection refused"
        assert srv.connections == 2, "one fresh attempt, no more"
    finally:
        rec.close()
        srv.close()
