"""The user and movie APIs over HTTP (Flask test client) and their plain classes."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient

from services.simulator.api import Faults, RateLimiter
from services.simulator.app import create_app
from services.simulator.settings import SimulatorSettings
from services.simulator.world import OCCUPATIONS, World


def _client(world: World, **overrides: object) -> FlaskClient:
    settings = SimulatorSettings(n_users=world.n_users, **overrides)  # type: ignore[arg-type]
    return create_app(settings, world=world).test_client()


@pytest.fixture(scope="module")
def client(small_world: World) -> FlaskClient:
    return _client(small_world, api_rate_limit=0)


def test_user_lookup(client: FlaskClient) -> None:
    r = client.get("/user/42")
    assert r.status_code == 200
    doc = r.get_json()
    assert set(doc) == {"user_id", "age", "occupation", "gender"}
    assert doc["user_id"] == 42 and doc["occupation"] in OCCUPATIONS and doc["gender"] in "MF"
    assert list(doc) == ["user_id", "age", "occupation", "gender"]  # the contract's order


@pytest.mark.parametrize(("path", "code"), [("/user/0", 400), ("/user/99999999", 404),
                                            ("/user/abc", 400), ("/user/-3", 400),
                                            ("/user/1.5", 400), ("/nowhere", 404),
                                            (f"/user/{2**63}", 400),
                                            ("/user/00", 400)])  # fmt: skip
def test_bad_user_ids_get_a_json_4xx(client: FlaskClient, path: str, code: int) -> None:
    r = client.get(path)
    assert r.status_code == code
    body = r.get_json()
    assert isinstance(body["error"], str) and "\n" not in body["error"]


def test_movie_lookup_and_unknown(client: FlaskClient, small_world: World) -> None:
    mid = small_world.catalog.ids[3]
    r = client.get(f"/movie/{mid}")
    assert r.status_code == 200
    doc = r.get_json()
    assert doc["id"] == mid and isinstance(doc["popularity"], str)
    assert doc == small_world.catalog.to_json(3)
    assert client.get("/movie/no+such+movie+1900").status_code == 404
    accented = next(i for i, m in enumerate(small_world.catalog.ids) if "é" in m or "ñ" in m)
    r2 = client.get(f"/movie/{small_world.catalog.ids[accented]}")
    assert r2.status_code == 200


def test_bulk_lookups(client: FlaskClient, small_world: World) -> None:
    ids = ",".join(str(i) for i in range(1, 201))
    r = client.get(f"/users?ids={ids}")
    assert r.status_code == 200 and len(r.get_json()["users"]) == 200
    r = client.get("/users?ids=1,2,999999999,x")
    assert [u["user_id"] for u in r.get_json()["users"]] == [1, 2]
    assert r.get_json()["not_found"] == ["999999999", "x"]
    too_many = ",".join(str(i) for i in range(1, 202))
    assert client.get(f"/users?ids={too_many}").status_code == 400
    assert client.get("/users").status_code == 400
    movies = small_world.catalog.ids[:5]
    r = client.get("/movies", query_string={"ids": ",".join([*movies, "nope+2000"])})
    body = r.get_json()
    assert [m["id"] for m in body["movies"]] == movies and body["not_found"] == ["nope+2000"]
    raw = client.get(f"/movies?ids={movies[0]},{movies[1]}")  # '+' unescaped: decodes as ' '
    assert [m["id"] for m in raw.get_json()["movies"]] == movies[:2]


def test_rate_limit_answers_429(small_world: World) -> None:
    c = _client(small_world, api_rate_limit=1.0, api_burst=5)
    codes = [c.get("/user/1").status_code for _ in range(8)]
    assert codes[:5] == [200] * 5 and codes[5:] == [429] * 3
    assert "rate limit" in c.get("/user/1").get_json()["error"]


def test_rate_limiter_refills_per_client() -> None:
    now = [0.0]
    rl = RateLimiter(rate=2.0, burst=2, clock=lambda: now[0])
    assert [rl.allow("a") for _ in range(3)] == [True, True, False]
    assert rl.allow("b")
    now[0] = 0.5
    assert rl.allow("a") and not rl.allow("a")
    assert RateLimiter(rate=0, burst=1).allow("x")


def test_injected_api_errors_and_slowness(small_world: World, tmp_path: object) -> None:
    from pathlib import Path

    f = Path(str(tmp_path)) / "sc.json"
    f.write_text('{"api_error_rate": 1.0}')
    c = _client(small_world, api_rate_limit=0, scenario=str(f))
    r = c.get("/user/1")
    assert r.status_code == 500 and r.get_json()["error"]
    faults = Faults(error_rate=0.3, slow_rate=0.2, slow_ms=50, seed=1)
    draws = [faults.draw() for _ in range(4_000)]
    assert 0.26 < sum(e for e, _ in draws) / 4_000 < 0.34
    assert 0.17 < sum(s > 0 for _, s in draws) / 4_000 < 0.23


def test_ops_endpoints(client: FlaskClient) -> None:
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").get_json() == {"status": "ready", "detail": "serving"}
    client.get("/user/1")
    text = client.get("/metrics").get_data(as_text=True)
    assert 'marquee_sim_api_requests_total{code="200",endpoint="user"}' in text
    assert "marquee_sim_api_request_duration_seconds_bucket" in text
