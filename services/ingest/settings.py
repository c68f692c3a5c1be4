"""Settings of the ingest service (env prefix ``MARQUEE_INGEST_``)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator
from pydantic_settings import NoDecode

from services.common.settings import KafkaSettings, service_config


class IngestSettings(KafkaSettings):
    """Everything the ingest consumer, store, enrichment and ops port need."""

    model_config = service_config("MARQUEE_INGEST_")

    store_path: Path
    """Root folder of the event store; required: losing track of it loses the data."""
    topics: Annotated[tuple[str, ...], NoDecode] = ("movielog", "exposures")
    """Kafka topics stored into this one store, comma-separated in the environment
    (``movielog,exposures``: the stream and the router's exposures).  The first is the store's
    primary topic: offsets in a store written before topics were recorded are its.  A missing
    topic is created at start (``topic_partitions``)."""
    topic: str | None = None
    """Deprecated alias of ``topics`` for one topic (the single-topic setting of old); setting
    both is an error."""
    topic_partitions: int = Field(default=3, ge=0)
    """Partitions of a subscribed topic that is missing at start: ingest creates it, as it does
    the dead-letter topic (the broker does not auto-create).  0: never create; a missing topic
    is then consumed once it appears (``metadata_max_age_ms``)."""
    metadata_max_age_ms: int = Field(default=30_000, ge=1_000)
    """How often the consumer refreshes topic metadata: a subscribed topic created after start
    (or a partition added) is consumed within about this long."""
    dlq_topic: str = "movielog-dlq"
    """Dead-letter topic: every rejected line is produced here with its reason in headers."""
    dlq_enabled: bool = True
    """Produce rejected lines to the dead-letter topic (the store's quarantine is always kept)."""
    group_id: str = "marquee-ingest"
    """Kafka consumer group; offsets are committed only once their segment is durable."""
    group_instance_id: str | None = Field(default_factory=socket.gethostname)
    """Static group membership id: a restarted pod takes its partitions back without a rebalance
    wait.  Must be unique per running instance (the pod name is)."""
    session_timeout_ms: int = 10_000
    """Kafka consumer session timeout; the broker's minimum is usually 6000."""
    max_poll_records: int = 20_000
    """Records handed over per poll: large batches keep per-call overhead off the hot loop."""
    fetch_max_bytes: int = 64 * 1024 * 1024
    """Largest fetch response; the stream's lines are small, so fetch generously."""
    flush_max_events: int = 200_000
    """Flush a segment after this many buffered lines (bounds memory)."""
    flush_max_bytes: int = 64 * 1024 * 1024
    """Flush a segment after roughly this many buffered line bytes (bounds memory)."""
    flush_interval_s: float = 30.0
    """Flush at least this often when anything is buffered: bounds data age and replay work;
    shorter means more, smaller files (there is no compaction yet)."""
    compact_interval_s: float = 3_600.0
    """How often the writer merges small segment files of a (type, date) folder; 0 disables."""
    compact_min_files: int = 12
    """A (type, date) folder is compacted once it holds this many files."""
    http_host: str = "127.0.0.1"
    """Interface of the ops HTTP port (/healthz, /readyz, /metrics); loopback unless told
    otherwise (a container sets ``0.0.0.0`` explicitly)."""
    http_port: int = 8090
    """Ops HTTP port; 0 picks a free one (tests)."""
    enrich_url: str | None = None
    """Base URL of the user/movie metadata API (e.g. http://marquee-sim:8080); None disables
    enrichment: snapshots then hold null metadata."""
    enrich_timeout_s: float = 5.0
    """Timeout of one metadata API request."""
    enrich_max_attempts: int = 5
    """Attempts per metadata request before the ids are parked and retried later."""
    enrich_batch_size: int = Field(default=200, ge=1, le=200)
    """Ids per bulk lookup; the API accepts at most 200."""
    enrich_rate_per_s: float = 20.0
    """Upper bound on metadata API requests per second (the API is rate-limited)."""
    future_tolerance_s: float = 86_400.0
    """Clock skew tolerated between a line's time and its Kafka record time, and how far a line
    may run ahead of stream time (README: stream time); beyond, ``time_in_future``."""
    max_lateness_s: float = 7 * 86_400.0
    """Events older than stream time by more than this are quarantined (``too_late``)."""
    late_window_s: float = 3_600.0
    """Events older than stream time by more than this (but within ``max_lateness_s``) are
    stored and counted as late; a rising share raises an alert."""
    stream_time_quorum: int = Field(default=16, ge=1)
    """Stream time only moves to a time this many accepted lines in a row have reached, and
    starts at the median of a partition's first this many lines: shorter bursts cannot move it."""
    dq_window_lines: int = 50_000
    """Data-quality ratios are evaluated over windows of this many lines."""
    dq_min_lines: int = 1_000
    """Fewer lines in a window than this never raise an alert (noise)."""

    @model_validator(mode="before")
    @classmethod
    def _topic_alias(cls, data: Any) -> Any:
        """``topic`` (deprecated) means ``topics`` of that one topic."""
        if isinstance(data, dict) and data.get("topic") is not None:
            if data.get("topics") is not None:
                raise ValueError("set topics or the deprecated topic, not both")
            data = {**data, "topics": (data["topic"],)}
        return data

    @field_validator("topics", mode="before")
    @classmethod
    def _split_topics(cls, value: Any) -> Any:
        """``movielog,exposures`` from the environment; blanks around names are dropped."""
        if isinstance(value, str):
            return tuple(t.strip() for t in value.split(",") if t.strip())
        return value

    @model_validator(mode="after")
    def _check_topics(self) -> IngestSettings:
        """At least one topic, none twice, and never the dead-letter topic (it would loop)."""
        if not self.topics:
            raise ValueError("topics: at least one topic is required")
        if len(set(self.topics)) != len(self.topics):
            raise ValueError(f"topics: {','.join(self.topics)} names a topic twice")
        if self.dlq_enabled and self.dlq_topic in self.topics:
            raise ValueError(f"topics: {self.dlq_topic} is the dead-letter topic")
        return self

    @property
    def primary_topic(self) -> str:
        """The store's primary topic: the first of ``topics``."""
        return self.topics[0]
