"""Prometheus metrics of the ingest service (base units, no user ids as labels)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

# ``*_created`` series double the exposition and no dashboard of ours reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]

EVENTS = Counter("marquee_ingest_events_total", "Valid events stored, by event type", ["type"])
REJECTED = Counter("marquee_ingest_rejected_total", "Lines quarantined, by reason", ["reason"])
LINES = Counter("marquee_ingest_lines_total", "Stream lines consumed (valid and rejected)")
REPLAYED = Counter(
    "marquee_ingest_replayed_records_total",
    "Records skipped because their offset is already stored",
)
LAG = Gauge(
    "marquee_ingest_consumer_lag",
    "Records between the consumer position and the log end",
    ["topic", "partition"],
)
ASSIGNED = Gauge(
    "marquee_ingest_assigned_partitions", "Partitions currently assigned to this consumer"
)
FLUSH_SECONDS = Histogram(
    "marquee_ingest_segment_flush_seconds",
    "Time to make one buffered batch durable (segments, quarantine, manifest)",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
FLUSHES = Counter("marquee_ingest_segment_flushes_total", "Batches made durable")
FLUSH_ERRORS = Counter(
    "marquee_ingest_segment_flush_errors_total", "Failed flush attempts (retried)"
)
SEGMENT_BYTES = Counter("marquee_ingest_segment_bytes_total", "Bytes of Parquet segments written")
COMMIT_ERRORS = Counter(
    "marquee_ingest_offset_commit_errors_total", "Kafka offset commits that failed"
)
DLQ_SENT = Counter(
    "marquee_ingest_dlq_sent_total", "Rejected lines produced to the dead-letter topic"
)
DLQ_ERRORS = Counter("marquee_ingest_dlq_errors_total", "Dead-letter produce attempts that failed")
DLQ_RESENT = Counter(
    "marquee_ingest_dlq_resent_total",
    "Rejected lines produced again after a failed attempt (may be twice in the dead-letter topic)",
)
BUFFERED = Gauge("marquee_ingest_buffered_lines", "Lines consumed but not yet durable")
DURABLE_OFFSET = Gauge(
    "marquee_ingest_durable_offset",
    "Next offset to read per partition (all before are stored)",
    ["topic", "partition"],
)
DQ_VIOLATIONS = Counter(
    "marquee_ingest_dq_violations_total", "Lines or events failing a data-quality check", ["check"]
)
DQ_RATIO = Gauge(
    "marquee_ingest_dq_ratio", "Share of the last window failing a data-quality check", ["check"]
)
DQ_ALERTS = Counter(
    "marquee_ingest_dq_alerts_total", "Windows in which a check crossed its threshold", ["check"]
)
ENRICH_REQUESTS = Counter(
    "marquee_ingest_enrichment_requests_total", "Metadata API requests", ["entity"]
)
ENRICH_ERRORS = Counter(
    "marquee_ingest_enrichment_errors_total",
    "Metadata API requests that failed",
    ["entity", "kind"],
)
ENRICH_PENDING = Gauge("marquee_ingest_enrichment_pending", "Ids waiting for metadata", ["entity"])
ENRICH_CACHED = Gauge("marquee_ingest_enrichment_cached", "Ids with cached metadata", ["entity"])
