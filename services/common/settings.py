"""Settings base: one pydantic-settings class per service, each with its own env prefix."""

from __future__ import annotations

from typing import Literal

from pydantic_settings import BaseSettings, SettingsConfigDict


def service_config(prefix: str) -> SettingsConfigDict:
    """Settings config for a service whose env variables start with ``prefix``."""
    return SettingsConfigDict(
        env_prefix=prefix,
        env_file=None,
        extra="ignore",
        frozen=True,
        use_attribute_docstrings=True,
    )


class ServiceSettings(BaseSettings):
    """Fields every service has; subclasses set ``model_config = service_config(...)``."""

    model_config = service_config("MARQUEE_")

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Lowest level of log record written."""
    log_json: bool = True
    """Write JSON lines (for services); plain text is easier on a terminal."""


class KafkaSettings(ServiceSettings):
    """Fields of a service that talks to Kafka."""

    kafka_bootstrap_servers: str
    """Comma-separated host:port list of the Kafka brokers; required, there is no safe default."""
    kafka_request_timeout_ms: int = 15_000
    """How long one Kafka request may take before the client gives up on it."""
    kafka_connect_timeout_s: float = 20.0
    """How long start-up waits for the brokers before failing."""
