"""The HTTP app on real stub recommenders: provenance headers, 4xx for bad ids, ops routes."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from services.router.app import create_app, runtime_of
from services.router.config import ConfigError
from services.router.settings import RouterSettings
from tests.infra import metric_total
from tests.router.appserver import AppClient
from tests.router.conftest import experiment, write_experiment
from tests.router.stub import StubRecommender, items_for


@pytest.fixture
def app(config_file: Path) -> Iterator[web.Application]:
    app = create_app(RouterSettings(config_path=config_file, reload_interval_s=0.05))
    yield app
    runtime_of(app).stop()


@pytest.fixture
def client(app: web.Application) -> Iterator[AppClient]:
    served = AppClient(app)
    yield served
    served.close()


def metric(client: AppClient, name: str, **labels: str) -> float:
    return metric_total(client.get("/metrics").text, name, **labels)


def test_answer_carries_the_arm_and_the_models_headers(
    client: AppClient, stubs: dict[str, StubRecommender]
) -> None:
    seen = set()
    for user in range(1, 40):
        resp = client.get(f"/recommend/{user}", headers={"X-Request-Id": f"req-{user}"})
        assert resp.status_code == 200
        assert resp.headers["Content-Type"] == "text/plain; charset=utf-8"
        arm = resp.headers["X-Arm"]
        seen.add(arm)
        assert resp.text == ",".join(items_for(arm, user))
        assert resp.headers["X-Experiment"] == "exp-1"
        assert resp.headers["X-Served-By"] == arm
        assert resp.headers["X-Model-Name"] == arm
        assert resp.headers["X-Model-Version"] == f"{arm}-v1"
        assert resp.headers["X-Model-Family"] == "stub"
        assert resp.headers["X-Request-Id"] == f"req-{user}"
        assert "X-Fallback" not in resp.headers
    assert seen == {"control", "treatment"}
    assert stubs["control"].calls + stubs["treatment"].calls == 39
    assert metric(client, "marquee_router_requests_total", status="200") == 39


@pytest.mark.parametrize(
    "path", ["/recommend/abc", "/recommend/-5", "/recommend/0", "/recommend/", "/recommend",
             "/recommend/1.5", "/recommend/99999999999999999999", "/recommend/1/2"],
)  # fmt: skip
def test_bad_user_ids_get_a_400_and_are_never_forwarded(
    client: AppClient, stubs: dict[str, StubRecommender], path: str
) -> None:
    resp = client.get(path)
    assert resp.status_code == 400
    body = resp.text
    assert body and "\n" not in body and "user id" in body
    assert stubs["control"].calls == stubs["treatment"].calls == 0
    assert metric(client, "marquee_router_requests_total", arm="none", status="400") == 1


def test_other_paths_and_methods(client: AppClient, stubs: dict[str, StubRecommender]) -> None:
    missing = client.get("/nope")
    assert missing.status_code == 404 and missing.text == "404 not found"
    post = client.post("/recommend/1")
    assert post.status_code == 405 and post.text == "405 method not allowed"
    assert post.headers["Allow"] == "GET"
    # HEAD would be an exposure nobody saw: refused, and never forwarded
    assert client.session.head(client.url + "/recommend/1").status_code == 405
    assert stubs["control"].calls == stubs["treatment"].calls == 0


def test_every_answer_carries_a_request_id(client: AppClient) -> None:
    assert client.get("/healthz", headers={"X-Request-Id": "abc-1"}).headers["X-Request-Id"] == (
        "abc-1"
    )
    minted = client.get("/recommend/x", headers={"X-Request-Id": "bad id with spaces"})
    assert minted.status_code == 400 and re.fullmatch(
        r"[0-9a-f]{32}", minted.headers["X-Request-Id"]
    )


def test_fallback_header_and_static_list(
    client: AppClient, stubs: dict[str, StubRecommender]
) -> None:
    stubs["treatment"].mode = "error"
    users = range(1, 30)
    answers = [client.get(f"/recommend/{u}") for u in users]
    fell = [r for r in answers if r.headers["X-Arm"] == "treatment"]
    reasons = [r.headers["X-Fallback"] for r in fell]
    # Five failures in a row open the arm's circuit: later requests skip it.
    assert reasons[:5] == ["status_5xx"] * 5 and set(reasons[5:]) == {"circuit_open"}
    assert all(r.headers["X-Served-By"] == "control" for r in fell)
    assert all(r.headers["X-Model-Name"] == "control" for r in fell)
    stubs["control"].mode = "garbage"
    resp = client.get("/recommend/1")
    assert resp.status_code == 200 and resp.headers["X-Served-By"] == "static"
    assert "X-Model-Name" not in resp.headers


def test_ops_routes(client: AppClient) -> None:
    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 200 and "exp-1" in json.loads(ready.content)["detail"]
    client.get("/recommend/1")
    body = client.get("/metrics").text
    for name in ("marquee_router_requests_total", "marquee_router_request_duration_seconds",
                 "marquee_router_upstream_duration_seconds", "marquee_router_assignments_total",
                 "marquee_router_arm_weight", "marquee_router_exposure_share",
                 "marquee_router_circuit_state"):  # fmt: skip
        assert name in body, name


def test_the_config_reloads_while_serving(
    app: web.Application, client: AppClient, config_file: Path, stubs: dict[str, StubRecommender]
) -> None:
    runtime = runtime_of(app)
    runtime.start()
    urls = {n: s.url for n, s in stubs.items()}
    write_experiment(config_file, experiment(urls, exposure=0.0))
    from tests.infra import wait_until

    wait_until(lambda: runtime.router.plan.config.exposure == 0.0, timeout=5)
    assert {client.get(f"/recommend/{u}").headers["X-Arm"] for u in range(1, 30)} == {"unexposed"}
    config_file.write_text("exposure: [")
    wait_until(lambda: metric(client, "marquee_router_config_reloads_total", result="rejected"),
               timeout=5)  # fmt: skip
    assert client.get("/recommend/3").status_code == 200
    assert runtime.router.plan.config.exposure == 0.0


def test_an_invalid_file_fails_start_up(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("experiment: x\n")
    with pytest.raises(ConfigError, match="salt: Field required"):
        create_app(RouterSettings(config_path=bad))


class _Recorded:
    """Stands in for the exposure log: keeps what the router records."""

    def __init__(self) -> None:
        self.events: list = []

    def record(self, event: object) -> None:
        self.events.append(event)


@pytest.mark.parametrize("trust", [False, True])
def test_exposures_use_the_callers_clock_only_when_trusted(config_file: Path, trust: bool) -> None:
    import time

    from services.router.app import CLIENT_TIME

    app = create_app(RouterSettings(config_path=config_file, trust_client_time=trust))
    recorded = _Recorded()
    runtime_of(app).router.exposures = recorded  # type: ignore[assignment]
    client = AppClient(app)
    simulated = 1_772_400_000_123_456_789  # 2026-03-01T21:20:00.123456789, ahead of no clock
    before = time.time_ns()
    assert client.get("/recommend/7", headers={CLIENT_TIME: str(simulated)}).status_code == 200
    for junk in ("soon", "-5", "99999999999999999999", ""):
        assert client.get("/recommend/8", headers={CLIENT_TIME: junk}).status_code == 200
    assert client.get("/recommend/9").status_code == 200
    times = [e.time_ns for e in recorded.events]
    assert len(times) == 6
    if trust:
        assert times[0] == simulated // 1_000_000 * 1_000_000  # the contract's milliseconds
    else:
        assert times[0] >= before // 1_000_000 * 1_000_000
    # a bad or missing header never fails a request and falls back to the wall clock
    assert all(t >= before // 1_000_000 * 1_000_000 for t in times[1:])
    client.close()
    runtime_of(app).stop()
