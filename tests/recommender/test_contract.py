"""The recommendation contract (stream-format.md §3), checked through the Flask app."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from services.common.artifacts import Manifest
from services.recommender.app import create_app, runtime_of
from services.recommender.synthetic import write_synthetic_model
from tests.recommender.conftest import SIZES, settings_for

KNOWN = range(1, SIZES["n_users"] + 1)
UNKNOWN = (301, 10_000, 2**63 - 1)  # ids are positive: 0 is a 400


def assert_contract(resp_data: bytes, content_type: str, valid_ids: set[str]) -> list[str]:
    """Check one answer against the contract and return its ids."""
    assert content_type.startswith("text/plain")
    text = resp_data.decode()
    assert text, "a loaded model never answers empty"
    assert not re.search(r"\s", text), "no spaces, no newline"
    assert not text.startswith("[") and not text.startswith("{"), "no JSON"
    ids = text.split(",")
    assert 1 <= len(ids) <= 20
    assert len(set(ids)) == len(ids), "distinct"
    assert set(ids) <= valid_ids
    return ids


@pytest.mark.parametrize("user_id", [1, 7, 150, 300, *UNKNOWN])
def test_answer_follows_contract(client: FlaskClient, app: Flask, user_id: int) -> None:
    scorer = runtime_of(app).holder.current.scorer  # type: ignore[union-attr]
    resp = client.get(f"/recommend/{user_id}")
    assert resp.status_code == 200
    ids = assert_contract(
        resp.data,
        resp.content_type,
        set(scorer.ids(scorer.popular)) | set(scorer.item_ids.tolist()),
    )
    assert len(ids) == 20


def test_lists_are_personalized(client: FlaskClient) -> None:
    lists = {client.get(f"/recommend/{u}").data for u in KNOWN}
    assert len(lists) / len(KNOWN) > 0.9


def test_never_recommends_a_watched_movie(client: FlaskClient, app: Flask) -> None:
    scorer = runtime_of(app).holder.current.scorer  # type: ignore[union-attr]
    for u in KNOWN:
        watched = set(scorer.ids(scorer.seen(scorer.user_index(u))))  # type: ignore[arg-type]
        got = client.get(f"/recommend/{u}").data.decode().split(",")
        assert not watched & set(got), u


def test_unknown_user_gets_cold_start_popularity(client: FlaskClient, app: Flask) -> None:
    scorer = runtime_of(app).holder.current.scorer  # type: ignore[union-attr]
    resp = client.get("/recommend/123456789")
    assert resp.status_code == 200
    assert resp.headers["X-Recommendation-Kind"] == "cold_start"
    assert resp.data.decode().split(",") == scorer.ids(scorer.popular[:20])
    known = client.get("/recommend/3")
    assert known.headers["X-Recommendation-Kind"] == "personalized"


def test_provenance_headers_and_access_log(
    client: FlaskClient, svd_v1: Manifest, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="marquee.recommender.access"):
        resp = client.get("/recommend/5", headers={"X-Request-Id": "abc-123"})
    h = resp.headers
    assert h["X-Model-Name"] == "synthetic"
    assert h["X-Model-Version"] == svd_v1.version
    assert h["X-Model-Snapshot"] == svd_v1.snapshot["content_hash"]
    assert h["X-Model-Git-Sha"] == svd_v1.git_sha
    assert h["X-Request-Id"] == "abc-123"
    rec = next(r for r in caplog.records if r.name == "marquee.recommender.access")
    assert rec.request_id == "abc-123"  # type: ignore[attr-defined]
    assert rec.model_version == svd_v1.version  # type: ignore[attr-defined]
    assert rec.snapshot_hash == svd_v1.snapshot["content_hash"]  # type: ignore[attr-defined]
    assert rec.git_sha == svd_v1.git_sha  # type: ignore[attr-defined]
    assert rec.status == 200  # type: ignore[attr-defined]
    # A request id is made up when the caller sends none (or junk).
    generated = client.get("/recommend/5", headers={"X-Request-Id": "bad id\x01"}).headers
    assert re.fullmatch(r"[0-9a-f]{32}", generated["X-Request-Id"])


def test_a_cached_answer_is_the_routes_answer(
    client: FlaskClient, app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    """A repeat request is answered from the list cache before Flask: the same bytes, headers,
    access-log line and metrics as the first (scored, routed) answer."""
    metrics = runtime_of(app).metrics
    version = runtime_of(app).holder.current.version  # type: ignore[union-attr]
    with caplog.at_level(logging.INFO, logger="marquee.recommender.access"):
        first = client.get("/recommend/9", headers={"X-Request-Id": "first"})
        again = client.get("/recommend/9", headers={"X-Request-Id": "again"})
    assert first.status_code == again.status_code == 200
    assert again.data == first.data
    assert again.headers["X-Request-Id"] == "again"
    same = {k: v for k, v in first.headers.items() if k != "X-Request-Id"}
    assert {k: v for k, v in again.headers.items() if k != "X-Request-Id"} == same
    assert list(again.headers.keys()) == list(first.headers.keys())
    lines = [r.__dict__ for r in caplog.records if r.name == "marquee.recommender.access"]
    assert [line["request_id"] for line in lines] == ["first", "again"]
    # what differs between any two records: the time (``asctime`` too, once a handler has
    # formatted it: the two may fall in different milliseconds), the request id and the source
    skip = {"request_id", "duration_ms", "created", "msecs", "relativeCreated", "thread"}
    skip |= {"threadName", "process", "processName", "lineno", "funcName", "pathname"}
    skip |= {"filename", "module", "args", "taskName", "asctime"}
    assert {k: v for k, v in lines[1].items() if k not in skip} == {
        k: v for k, v in lines[0].items() if k not in skip
    }
    assert metrics.list_cache.labels("miss")._value.get() == 1
    assert metrics.list_cache.labels("hit")._value.get() == 1
    assert metrics.requests.labels(version, "200")._value.get() == 2
    histogram = metrics.latency.labels(version)
    assert sum(b.get() for b in histogram._buckets) == 2
    # what the cache cannot answer still goes through the route: bad ids, HEAD, other users
    assert client.get("/recommend/0").status_code == 400
    assert client.get("/recommend/9/").status_code == 400
    assert client.head("/recommend/9").status_code == 200
    assert client.get("/recommend/10").headers["X-Recommendation-Kind"] == "personalized"
    assert metrics.list_cache.labels("miss")._value.get() == 2


@pytest.mark.parametrize(
    "raw",
    [
        "abc",
        "-5",
        "1.5",
        "1e3",
        "+5",
        "0x10",
        "12abc",
        "%2012",
        "12%20",
        "1/2",
        "..%2F..%2Fetc",
        "%D9%A3",  # an Arabic-Indic digit: str.isdigit() says yes, we say no
        "99999999999999999999",
        "9223372036854775808",  # int64 max + 1
        "1" * 5000,
        "%00",
        "",
        "0",  # ids are positive
        "000",
    ],
)
def test_bad_user_id_is_400_with_one_line(client: FlaskClient, raw: str) -> None:
    resp = client.get(f"/recommend/{raw}")
    assert resp.status_code == 400
    assert resp.content_type.startswith("text/plain")
    text = resp.data.decode()
    assert text and "\n" not in text and len(text) < 200


def test_largest_int64_is_accepted(client: FlaskClient) -> None:
    assert client.get(f"/recommend/{2**63 - 1}").status_code == 200
    assert client.get("/recommend/0007").status_code == 200


def test_other_paths_and_methods_answer_cleanly(client: FlaskClient) -> None:
    nf = client.get("/nope")
    assert (nf.status_code, nf.data) == (404, b"404 not found")
    na = client.post("/recommend/5")
    assert na.status_code == 405
    assert "GET" in na.headers["Allow"]
    assert na.content_type.startswith("text/plain")
    assert client.head("/recommend/5").status_code == 200


def test_probes_and_metrics(client: FlaskClient, svd_v1: Manifest) -> None:
    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert svd_v1.version in ready.data.decode()
    client.get("/recommend/5")
    client.get("/recommend/99999")
    client.get("/recommend/x")
    body = client.get("/metrics").data.decode()
    assert (
        f'marquee_recommender_requests_total{{model_version="{svd_v1.version}",status="200"}} 2.0'
        in body
    )
    assert 'marquee_recommender_requests_total{model_version="",status="400"} 1.0' in body
    assert "marquee_recommender_request_duration_seconds_bucket" in body
    assert "marquee_recommender_cold_starts_total" in body
    assert "user_id" not in body


def test_not_ready_until_a_model_is_loaded(registry_root: Path) -> None:
    app = create_app(settings_for(registry_root))
    client = app.test_client()
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 503
    assert client.get("/recommend/1").status_code == 503
    write_synthetic_model(registry_root, seed=3, **SIZES)
    assert runtime_of(app).holder.refresh()
    assert client.get("/readyz").status_code == 200
    assert client.get("/recommend/1").status_code == 200


@pytest.mark.parametrize("family", ["svd", "als", "knn", "popularity"])
def test_every_family_serves_the_contract(registry_root: Path, family: str) -> None:
    write_synthetic_model(registry_root, family=family, seed=5, **SIZES)
    app = create_app(settings_for(registry_root))
    client = app.test_client()
    scorer = runtime_of(app).holder.current.scorer  # type: ignore[union-attr]
    valid = set(scorer.item_ids.tolist())
    kinds = set()
    for u in (1, 2, 50, 99_999):
        resp = client.get(f"/recommend/{u}")
        assert resp.status_code == 200
        assert resp.headers["X-Model-Family"] == family
        assert len(assert_contract(resp.data, resp.content_type, valid)) == 20
        kinds.add(resp.headers["X-Recommendation-Kind"])
    expected = (
        {"popularity", "cold_start"} if family == "popularity" else {"personalized", "cold_start"}
    )
    assert kinds == expected
