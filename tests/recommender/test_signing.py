"""With a signing key the recommender serves only models signed with it."""

from __future__ import annotations

from pathlib import Path

from flask import Flask

from services.common.artifacts import SIGNATURE_FILE, Registry
from services.common.settings import ModelSigningSettings
from services.recommender.app import create_app, runtime_of
from services.recommender.settings import RecommenderSettings
from services.recommender.synthetic import write_synthetic_model
from tests.recommender.conftest import SIZES, settings_for

KEY = b"cluster-secret"


def _settings(root: Path, key: bytes | None = KEY) -> RecommenderSettings:
    signing = ModelSigningSettings(signing_key=key.decode() if key else None)  # type: ignore[arg-type]
    return settings_for(root, signing=signing)


def _failures(app: Flask, reason: str) -> float:
    metrics = runtime_of(app).metrics
    return float(metrics.model_load_failures.labels(reason)._value.get())


def test_unsigned_model_is_refused_with_a_metric(registry_root: Path) -> None:
    write_synthetic_model(registry_root, seed=1, **SIZES)  # registered without a key
    app = create_app(_settings(registry_root))
    client = app.test_client()
    assert client.get("/readyz").status_code == 503
    assert client.get("/recommend/5").status_code == 503
    assert _failures(app, "signature") == 1
    assert 'marquee_recommender_model_load_failures_total{reason="signature"} 1.0' in (
        client.get("/metrics").get_data(as_text=True)
    )


def test_signed_model_is_served_and_a_mis_signed_one_never_replaces_it(
    registry_root: Path,
) -> None:
    v1 = write_synthetic_model(registry_root, seed=1, signing_key=KEY, **SIZES)
    app = create_app(_settings(registry_root))
    client = app.test_client()
    assert client.get("/readyz").status_code == 200
    assert client.get("/recommend/5").headers["X-Model-Version"] == v1.version
    # A version signed with another key is pointed at: the old model keeps serving.
    v2 = write_synthetic_model(registry_root, seed=2, signing_key=b"attacker", **SIZES)
    assert not runtime_of(app).holder.refresh()
    assert client.get("/recommend/5").headers["X-Model-Version"] == v1.version
    assert _failures(app, "signature") == 1
    # Its signature file removed: still refused (after the retry wait).
    (Registry(registry_root).path("synthetic", v2.version) / SIGNATURE_FILE).unlink()
    runtime_of(app).holder._failed.clear()
    assert not runtime_of(app).holder.refresh()
    assert _failures(app, "signature") == 2
    assert client.get("/recommend/5").headers["X-Model-Version"] == v1.version


def test_without_a_key_signatures_are_not_required(registry_root: Path) -> None:
    write_synthetic_model(registry_root, seed=1, **SIZES)
    app = create_app(_settings(registry_root, key=None))
    assert app.test_client().get("/readyz").status_code == 200
