"""The service shell: user ids, ops probes, error bodies, request ids, runtime, ops server."""

from __future__ import annotations

import argparse
import logging
import os
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from flask import Flask
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, generate_latest

from services.common.events import MAX_USER_ID
from services.common.runtime import (
    GracefulStop,
    is_loopback,
    pin_blas_threads,
    settings_from_flags,
    split_bind,
)
from services.common.service import (
    BackgroundServer,
    InvalidUserIdError,
    ops_blueprint,
    parse_user_id,
    register_error_handlers,
    register_request_log,
)
from services.common.settings import ServiceSettings, service_config

# --- user ids -------------------------------------------------------------------------------


@given(st.integers(min_value=1, max_value=MAX_USER_ID))
def test_every_positive_int64_user_id_parses(n: int) -> None:
    assert parse_user_id(str(n)) == n


@given(st.text(max_size=30))
def test_any_text_parses_or_raises_one_line_reason(raw: str) -> None:
    try:
        n = parse_user_id(raw)
    except InvalidUserIdError as exc:
        reason = str(exc)
        assert reason and "\n" not in reason
        return
    assert raw.isascii() and raw.isdigit()
    assert 1 <= n <= MAX_USER_ID


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("0", "positive"),
        ("0000", "positive"),
        ("-3", "positive"),
        ("", "missing"),
        ("x1", "decimal"),
        ("\u0663", "decimal"),  # an Arabic-Indic digit: str.isdigit() says yes, we say no
        (str(MAX_USER_ID + 1), "range"),
        ("1" * 65, "too long"),
    ],
)
def test_bad_user_ids_say_why(raw: str, reason: str) -> None:
    with pytest.raises(InvalidUserIdError, match=reason):
        parse_user_id(raw)


def test_leading_zeros_are_tolerated() -> None:
    assert parse_user_id("0007") == 7


# --- the HTTP shell -------------------------------------------------------------------------


def _app(style: str = "json", ready: tuple[bool, str] = (True, "fine")) -> tuple[Flask, list[int]]:
    errors: list[int] = []
    registry = CollectorRegistry()
    hits = Counter("shell_test_hits", "Hits.", registry=registry)
    app = Flask("shell-test")
    register_error_handlers(app, style=style, on_error=errors.append)  # type: ignore[arg-type]
    app.register_blueprint(
        ops_blueprint(lambda: ready, metrics=lambda: (generate_latest(registry), "text/plain"))
    )

    @app.get("/user/<raw>")
    def user(raw: str) -> str:
        hits.inc()
        return str(parse_user_id(raw))

    @app.get("/boom")
    def boom() -> str:
        raise RuntimeError("secret detail\nsecond line")

    return app, errors


def test_probes_answer_in_one_shape() -> None:
    client = _app()[0].test_client()
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert (ready.status_code, ready.get_json()) == (200, {"status": "ready", "detail": "fine"})
    not_ready = _app(ready=(False, "no model yet"))[0].test_client().get("/readyz")
    assert not_ready.status_code == 503
    assert not_ready.get_json() == {"status": "not ready", "detail": "no model yet"}
    client.get("/user/5")
    assert "shell_test_hits_total 1.0" in client.get("/metrics").get_data(as_text=True)


def test_unhealthy_is_503() -> None:
    app = Flask("x")
    app.register_blueprint(ops_blueprint(healthy=lambda: False))
    resp = app.test_client().get("/healthz")
    assert (resp.status_code, resp.get_json()) == (503, {"status": "unhealthy"})


@pytest.mark.parametrize(
    ("path", "method", "code"),
    [("/user/0", "GET", 400), ("/user/abc", "GET", 400), ("/nope", "GET", 404),
     ("/user/5", "POST", 405), ("/boom", "GET", 500)],
)  # fmt: skip
def test_json_errors_are_one_line(path: str, method: str, code: int) -> None:
    app, errors = _app("json")
    resp = app.test_client().open(path, method=method)
    assert resp.status_code == code
    body = resp.get_json()
    assert set(body) == {"error"} and body["error"] and "\n" not in body["error"]
    assert "secret" not in body["error"]  # a bug's details go to the log, not the client
    assert errors == [code]
    if code == 405:
        assert "GET" in resp.headers["Allow"]


def test_text_errors_are_one_line() -> None:
    client = _app("text")[0].test_client()
    assert client.get("/nope").data == b"404 not found"
    bad = client.get("/user/0")
    assert bad.status_code == 400 and bad.content_type.startswith("text/plain")
    assert bad.data == b"user id must be positive"


def test_request_ids_are_echoed_or_minted(caplog: pytest.LogCaptureFixture) -> None:
    app, _ = _app()
    register_request_log(app, logging.getLogger("shell-test.access"))
    client = app.test_client()
    with caplog.at_level(logging.INFO, logger="shell-test.access"):
        assert client.get("/user/5", headers={"X-Request-Id": "abc-1"}).headers["X-Request-Id"] == (
            "abc-1"
        )
        minted = client.get("/user/5", headers={"X-Request-Id": "bad id;drop"}).headers[
            "X-Request-Id"
        ]
        client.get("/healthz")  # probes log at DEBUG only
    assert minted != "bad id;drop" and len(minted) == 32
    lines = [r for r in caplog.records if r.name == "shell-test.access"]
    assert [(r.path, r.status, r.request_id) for r in lines] == [  # type: ignore[attr-defined]
        ("/user/5", 200, "abc-1"),
        ("/user/5", 200, minted),
    ]


# --- runtime --------------------------------------------------------------------------------


class _Settings(ServiceSettings):
    model_config = service_config("MARQUEE_SHELLTEST_")

    port: int = 1
    """A port."""
    host: str = "127.0.0.1"
    """A host."""


def test_flags_win_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MARQUEE_SHELLTEST_PORT", "2")
    monkeypatch.setenv("MARQUEE_SHELLTEST_HOST", "::1")
    flags = {"port": "port", "host": "host"}
    s = settings_from_flags(_Settings, argparse.Namespace(port=3, host=None), flags)
    assert (s.port, s.host) == (3, "::1")
    settings_from_flags(_Settings, argparse.Namespace(port=4, host=None), flags, export=True)
    assert os.environ["MARQUEE_SHELLTEST_PORT"] == "4"  # for a server that re-reads the env
    assert os.environ["MARQUEE_SHELLTEST_HOST"] == "::1"


def test_pin_blas_threads_keeps_an_explicit_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "3")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    pin_blas_threads()
    assert os.environ["OPENBLAS_NUM_THREADS"] == "3"
    assert os.environ["OMP_NUM_THREADS"] == os.environ["MKL_NUM_THREADS"] == "1"


@pytest.fixture
def restore_signals() -> Iterator[None]:
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


@pytest.mark.usefixtures("restore_signals")
def test_sigterm_asks_for_a_graceful_stop() -> None:
    stop = GracefulStop()
    assert not stop.is_set()
    os.kill(os.getpid(), signal.SIGTERM)
    assert stop.wait(5.0)
    assert stop.signum == signal.SIGTERM


def test_binds() -> None:
    assert split_bind("127.0.0.1:8082") == ("127.0.0.1", 8082)
    assert split_bind("[::1]:80") == ("[::1]", 80)
    for bad in ("8082", ":80", "host:", "h:99999"):
        with pytest.raises(ValueError, match="host:port"):
            split_bind(bad)
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3")


def test_services_bind_loopback_unless_told(monkeypatch: pytest.MonkeyPatch) -> None:
    from services.ingest.settings import IngestSettings
    from services.recommender.settings import RecommenderSettings
    from services.simulator.settings import SimulatorSettings

    for var in list(os.environ):
        if var.startswith(("MARQUEE_SIM_", "MARQUEE_INGEST_", "MARQUEE_RECOMMENDER_")):
            monkeypatch.delenv(var)
    assert SimulatorSettings().host == "127.0.0.1"
    ingest = IngestSettings(kafka_bootstrap_servers="127.0.0.1:1", store_path="/tmp/x")  # type: ignore[arg-type]
    assert ingest.http_host == "127.0.0.1"
    reco = RecommenderSettings(registry_root="/tmp/r", model_name="m")  # type: ignore[arg-type]
    assert split_bind(reco.bind)[0] == "127.0.0.1"
    monkeypatch.setenv("MARQUEE_SIM_HOST", "0.0.0.0")  # what a container sets
    assert SimulatorSettings().host == "0.0.0.0"


# --- the ops server -------------------------------------------------------------------------


def test_background_server_serves_concurrently_and_stops() -> None:
    app, _ = _app()
    server = BackgroundServer(app, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{server.port}"
    try:
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: requests.get(f"{url}/readyz", timeout=5), range(32)))
        assert {r.status_code for r in answers} == {200}
        assert answers[0].headers["Server"] == "marquee"  # waitress, not Werkzeug's dev server
        assert requests.get(f"{url}/user/0", timeout=5).status_code == 400
    finally:
        server.close()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/healthz", timeout=2)
