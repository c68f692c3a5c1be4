"""Settings base: one pydantic-settings class per service, each with its own env prefix."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import SecretStr
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


class ModelSigningSettings(BaseSettings):
    """The model-signing key (``MARQUEE_MODEL_*``): one secret the trainer signs with and the
    recommender verifies with; unset, models are neither signed nor checked."""

    model_config = service_config("MARQUEE_MODEL_")

    signing_key: SecretStr | None = None
    """HMAC-SHA256 key for registry manifests, as text."""
    signing_key_file: Path | None = None
    """File holding the key (a mounted Kubernetes Secret); wins over ``signing_key``."""

    def key(self) -> bytes | None:
        """The key bytes, or None when signing is off; ValueError when configured but empty."""
        if self.signing_key_file is not None:
            # A missing or empty key file is a broken deployment: fail, never run unsigned.
            try:
                raw = self.signing_key_file.read_bytes().strip()
            except OSError as exc:
                raise ValueError(f"cannot read model signing key file: {exc}") from exc
            if not raw:
                raise ValueError(f"model signing key file {self.signing_key_file} is empty")
            return raw
        if self.signing_key is None:
            return None
        text = self.signing_key.get_secret_value().strip()
        if not text:
            raise ValueError("MARQUEE_MODEL_SIGNING_KEY is set but empty")
        return text.encode()
