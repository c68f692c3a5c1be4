"""Kafka producer and consumer factories with explicit timeouts (kafka-python)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import NoBrokersAvailable
from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_exponential

from services.common.settings import KafkaSettings


def _servers(settings: KafkaSettings) -> list[str]:
    return [s.strip() for s in settings.kafka_bootstrap_servers.split(",") if s.strip()]


def make_producer(settings: KafkaSettings, **overrides: Any) -> KafkaProducer:
    """An idempotent producer: its own retries never write a record twice.

    ``enable_idempotence`` gives the producer an id and numbers its batches, so the broker drops
    a batch it already holds when a retry follows a lost acknowledgement (a broker crash, a
    timeout); kafka-python then needs ``acks='all'`` and one request in flight.  A send keeps
    being retried until ``delivery_timeout_ms`` and then fails loudly.  What this cannot cover:
    a record the *application* sends again after a failed send is a new record, so callers that
    resend (the ingest dead-letter topic) say so and count it.
    """
    options: dict[str, Any] = {
        "bootstrap_servers": _servers(settings),
        "enable_idempotence": True,
        "acks": "all",
        "linger_ms": 5,
        "batch_size": 256 * 1024,
        "compression_type": None,
        "request_timeout_ms": settings.kafka_request_timeout_ms,
        "delivery_timeout_ms": max(120_000, settings.kafka_request_timeout_ms),
        "max_block_ms": settings.kafka_request_timeout_ms,
        "max_in_flight_requests_per_connection": 1,
        "api_version_auto_timeout_ms": int(settings.kafka_connect_timeout_s * 1000),
    }
    options.update(overrides)
    return _connect(lambda: KafkaProducer(**options), settings)


def make_consumer(
    settings: KafkaSettings, topics: Sequence[str], group_id: str | None, **overrides: Any
) -> KafkaConsumer:
    """A consumer with auto-commit off: callers commit only what they have made durable."""
    options: dict[str, Any] = {
        "bootstrap_servers": _servers(settings),
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "request_timeout_ms": max(settings.kafka_request_timeout_ms, 30_500),
        "session_timeout_ms": 10_000,
        "heartbeat_interval_ms": 3_000,
        "max_poll_records": 5_000,
        "max_poll_interval_ms": 300_000,
        "fetch_max_bytes": 32 * 1024 * 1024,
        "max_partition_fetch_bytes": 8 * 1024 * 1024,
        "api_version_auto_timeout_ms": int(settings.kafka_connect_timeout_s * 1000),
    }
    options.update(overrides)
    consumer = _connect(lambda: KafkaConsumer(**options), settings)
    if topics:
        consumer.subscribe(list(topics))
    return consumer


def _connect(factory: Any, settings: KafkaSettings) -> Any:
    """Retry the client's first connection with backoff until ``kafka_connect_timeout_s``."""
    attempt = retry(
        retry=retry_if_exception_type(NoBrokersAvailable),
        wait=wait_exponential(multiplier=0.2, max=2.0),
        stop=stop_after_delay(settings.kafka_connect_timeout_s),
        reraise=True,
    )(factory)
    return attempt()
