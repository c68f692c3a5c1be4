"""Settings: env prefixes, required fields fail at start-up, docstrings become descriptions."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.common.settings import KafkaSettings, ServiceSettings, service_config


class _Example(KafkaSettings):
    model_config = service_config("MARQUEE_EXAMPLE_")

    store: str
    """Where the example keeps its data."""
    batch: int = 10
    """Lines per batch."""


def test_required_field_missing_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MARQUEE_EXAMPLE_STORE", raising=False)
    with pytest.raises(ValidationError, match="store"):
        _Example()


def test_values_come_from_prefixed_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MARQUEE_EXAMPLE_STORE", "/tmp/s")
    monkeypatch.setenv("MARQUEE_EXAMPLE_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.setenv("MARQUEE_EXAMPLE_BATCH", "5")
    monkeypatch.setenv("STORE", "/wrong")
    s = _Example()
    assert (s.store, s.batch, s.kafka_bootstrap_servers) == ("/tmp/s", 5, "127.0.0.1:1")


def test_bad_values_are_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MARQUEE_EXAMPLE_STORE", "/tmp/s")
    monkeypatch.setenv("MARQUEE_EXAMPLE_KAFKA_BOOTSTRAP_SERVERS", "x")
    monkeypatch.setenv("MARQUEE_EXAMPLE_BATCH", "many")
    with pytest.raises(ValidationError, match="batch"):
        _Example()


def test_every_field_is_documented() -> None:
    for cls in (ServiceSettings, KafkaSettings, _Example):
        for name, field in cls.model_fields.items():
            assert field.description, f"{cls.__name__}.{name} has no docstring"


def test_settings_are_immutable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MARQUEE_EXAMPLE_STORE", "/tmp/s")
    monkeypatch.setenv("MARQUEE_EXAMPLE_KAFKA_BOOTSTRAP_SERVERS", "x")
    s = _Example()
    with pytest.raises(ValidationError):
        s.batch = 3  # type: ignore[misc]
