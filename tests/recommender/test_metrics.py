"""Metrics a canary can use: versions on latency, zero-initialized counters, honest labels."""

from __future__ import annotations

from flask.testing import FlaskClient

from services.common.artifacts import Manifest


def samples(client: FlaskClient) -> dict[str, float]:
    """The app's /metrics as {sample line without value: value}."""
    out: dict[str, float] = {}
    for line in client.get("/metrics").data.decode().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def test_latency_is_labelled_with_the_version_that_answered(
    client: FlaskClient, svd_v1: Manifest
) -> None:
    client.get("/recommend/5")
    client.get("/recommend/6")
    s = samples(client)
    key = f'marquee_recommender_request_duration_seconds_count{{model_version="{svd_v1.version}"}}'
    assert s[key] == 2.0


def test_counters_that_matter_exist_at_zero_from_the_start(client: FlaskClient) -> None:
    s = samples(client)
    for reason in ("scoring_error", "no_segment"):
        assert s[f'marquee_recommender_fallbacks_total{{reason="{reason}"}}'] == 0.0
    for reason in ("pointer", "signature", "verification", "error"):
        assert s[f'marquee_recommender_model_load_failures_total{{reason="{reason}"}}'] == 0.0
    for result in ("cache_hit", "fetched", "not_found", "timeout", "error"):
        assert s[f'marquee_recommender_user_lookups_total{{result="{result}"}}'] == 0.0


def test_error_answers_carry_no_model_version(client: FlaskClient, svd_v1: Manifest) -> None:
    client.get("/recommend/x")
    client.get("/recommend/0")
    s = samples(client)
    assert s['marquee_recommender_requests_total{model_version="",status="400"}'] == 2.0
    # No request series claims a version that did not answer.
    versions = {
        key.split('model_version="')[1].split('"')[0]
        for key in s
        if key.startswith("marquee_recommender_requests_total{")
    }
    assert versions == {""}
    assert not any('model_version="none"' in key for key in s)
