"""Settings of the ingest service (env prefix ``MARQUEE_INGEST_``)."""

from __future__ import annotations

import socket
from pathlib import Path

from pydantic import Field

from services.common.settings import KafkaSettings, service_config


class IngestSettings(KafkaSettings):
    """Everything the ingest consumer, store, enrichment and ops port need."""

    model_config = service_config("MARQUEE_INGEST_")

    store_path: Path
    """Root folder of the event store; required: losing track of it loses the data."""
    topic: str = "movielog"
    """Kafka topic carrying the stream lines."""
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
    http_host: str = "0.0.0.0"
    """Interface of the ops HTTP port (/healthz, /readyz, /metrics)."""
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
    """Events stamped more than this ahead of the partition's stream head are quarantined
    (``time_in_future``): a broken clock must not move the head."""
    max_lateness_s: float = 7 * 86_400.0
    """Events older than the head by more than this are quarantined (``too_late``)."""
    late_window_s: float = 3_600.0
    """Events older than the head by more than this (but within ``max_lateness_s``) are stored
    and counted as late; a rising share raises an alert."""
    dq_window_lines: int = 50_000
    """Data-quality ratios are evaluated over windows of this many lines."""
    dq_min_lines: int = 1_000
    """Fewer lines in a window than this never raise an alert (noise)."""
