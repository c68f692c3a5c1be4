"""Fixtures of the recommender tests: a registry of synthetic models and an app on it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from services.common.artifacts import Manifest, Registry
from services.recommender.app import create_app, runtime_of
from services.recommender.settings import RecommenderSettings
from services.recommender.synthetic import write_synthetic_model

SIZES = {"n_users": 300, "n_items": 400, "n_factors": 16, "seen_per_user": 15}


@pytest.fixture
def registry_root(tmp_path: Path) -> Path:
    """An empty registry folder."""
    root = tmp_path / "registry"
    root.mkdir()
    return root


@pytest.fixture
def svd_v1(registry_root: Path) -> Manifest:
    """A synthetic svd model on the stable channel."""
    return write_synthetic_model(registry_root, family="svd", seed=1, **SIZES)


def settings_for(root: Path, **overrides: object) -> RecommenderSettings:
    """Settings for a test app on ``root`` (fields not given take their defaults)."""
    return RecommenderSettings(registry_root=root, model_name="synthetic", **overrides)  # type: ignore[arg-type]


@pytest.fixture
def app(registry_root: Path, svd_v1: Manifest) -> Iterator[Flask]:
    """An app serving ``svd_v1`` (no watcher thread: tests call refresh themselves)."""
    app = create_app(settings_for(registry_root))
    yield app
    runtime_of(app).stop()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """A Flask test client of ``app``."""
    return app.test_client()


@pytest.fixture
def registry(registry_root: Path) -> Registry:
    """The registry object on ``registry_root``."""
    return Registry(registry_root)
