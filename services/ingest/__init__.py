"""Ingest: the Kafka stream into a validated, exactly-once event store and training snapshots."""
