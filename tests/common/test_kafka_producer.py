"""The producer factory's promise: retries never write a record twice (idempotence)."""

from __future__ import annotations

from typing import Any

import pytest

from services.common import kafka
from services.common.settings import KafkaSettings


def test_make_producer_is_idempotent(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def fake(**options: Any) -> dict[str, Any]:
        seen.update(options)
        return options

    monkeypatch.setattr(kafka, "KafkaProducer", fake)
    kafka.make_producer(KafkaSettings(kafka_bootstrap_servers="127.0.0.1:1"), linger_ms=20)
    # What kafka-python demands for idempotence (else it refuses to start).
    assert seen["enable_idempotence"] is True
    assert seen["acks"] == "all" and seen["max_in_flight_requests_per_connection"] == 1
    assert seen.get("retries", 1) != 0 and seen["linger_ms"] == 20
