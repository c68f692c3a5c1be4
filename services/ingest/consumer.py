"""The Kafka transport: poll, hand records to the ``Ingestor``, commit what it made durable.

The loop does no parsing or validation of its own.  One consumer subscribes to every topic of
``settings.topics`` (the stream and the router's exposures) and feeds one store.  Positions come
from the store: on every assignment each (topic, partition) is sought to the store's next
offset, so a crash, a rebalance or a broker restart replays at most what was not durable, and
the ``Ingestor`` skips any replayed offset it already holds.  Kafka offsets are committed after
each durable flush (for lag monitoring and as a fallback), never before.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

import pyarrow.compute as pc
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import KafkaError, TopicAlreadyExistsError
from kafka.structs import OffsetAndMetadata

from services.common.kafka import make_consumer, make_producer
from services.ingest import metrics
from services.ingest.core import DeadLetter, Ingestor
from services.ingest.enrich import CACHE_FILE, Enricher, MetadataCache, MetadataClient
from services.ingest.quality import QualityMonitor
from services.ingest.settings import IngestSettings
from services.ingest.store import EventStore, by_topic

log = logging.getLogger(__name__)


class KafkaDeadLetters:
    """Produces rejected lines to the dead-letter topic; raises unless every one was acked.

    At least once, not exactly once: the producer is idempotent, so its own retries never
    duplicate, but a flush that failed is retried with the same letters, and after a crash the
    replayed lines are rejected and sent again; letters that had landed before are then in the
    topic twice.  Each carries its source topic, partition and offset (key
    ``topic:partition:offset`` and headers) to deduplicate by; resends within a process are
    counted in ``marquee_ingest_dlq_resent_total``.  The store's quarantine never holds a line
    twice.
    """

    def __init__(self, producer: KafkaProducer, topic: str, timeout_s: float = 30.0) -> None:
        self.producer = producer
        self.topic = topic
        self.timeout_s = timeout_s
        # Sent by a failed call, so they may have landed: (topic, partition, offset).
        self._unconfirmed: set[tuple[str, int, int]] = set()

    def __call__(self, letters: Sequence[DeadLetter]) -> None:
        """Send and wait for every acknowledgement."""
        keys = {(d.topic, d.partition, d.offset) for d in letters}
        resent = len(keys & self._unconfirmed)
        if resent:
            metrics.DLQ_RESENT.inc(resent)
        self._unconfirmed |= keys
        try:
            futures = [
                self.producer.send(
                    self.topic,
                    value=d.raw,
                    key=f"{d.topic}:{d.partition}:{d.offset}".encode(),
                    headers=[
                        ("reason", d.reason.encode()),
                        ("detail", d.detail.encode("utf-8", "replace")[:1000]),
                        ("topic", d.topic.encode()),
                        ("partition", str(d.partition).encode()),
                        ("offset", str(d.offset).encode()),
                        ("kafka_time_ms", str(d.kafka_time_ms).encode()),
                    ],
                )
                for d in letters
            ]
            self.producer.flush(timeout=self.timeout_s)
            for f in futures:
                f.get(timeout=0)
        except Exception:
            metrics.DLQ_ERRORS.inc()
            raise
        self._unconfirmed -= keys
        metrics.DLQ_SENT.inc(len(letters))


def ensure_topics(settings: IngestSettings, partitions: dict[str, int]) -> None:
    """Create each missing topic with its partitions (the broker does not auto-create).

    Best effort, with one admin connection: a topic that cannot be created is logged, and the
    consumer then reads it once it exists.
    """
    if not partitions:
        return
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=settings.kafka_bootstrap_servers.split(","),
            request_timeout_ms=settings.kafka_request_timeout_ms,
        )
    except KafkaError as exc:
        log.warning("cannot reach Kafka admin to check topics %s: %s", sorted(partitions), exc)
        return
    try:
        existing = set(admin.list_topics())
        for topic, n in partitions.items():
            if topic in existing:
                continue
            try:
                admin.create_topics([NewTopic(topic, n, 1)])
                log.info("created topic", extra={"topic": topic, "partitions": n})
            except TopicAlreadyExistsError:
                pass
    except KafkaError as exc:
        log.warning("could not create topics %s: %s", sorted(partitions), exc)
    finally:
        admin.close()


def _names(tps: set[tuple[str, int]]) -> list[str]:
    """``topic:partition`` names, sorted (status pages)."""
    return [f"{t}:{p}" for t, p in sorted(tps)]


def _await_topics(
    consumer: KafkaConsumer, topics: list[str], max_age_ms: int, wait_s: float = 10.0
) -> None:
    """Wait (briefly) until every topic's partitions are known, so the first assignment has them.

    A topic created a moment ago may have no partition leaders yet; joining the group before
    they are known can leave it unassigned until a later rebalance.  A topic still missing is
    no error: it is logged and consumed once it appears.
    """
    missing = list(topics)
    end = time.monotonic() + wait_s
    while missing and time.monotonic() < end:
        try:
            missing = [t for t in missing if not consumer.partitions_for_topic(t)]
        except KafkaError as exc:
            log.warning("cannot read topic metadata: %s", exc)
            return
        if missing:
            time.sleep(0.2)
    for topic in missing:
        log.warning(
            "topic %s does not exist; it is consumed once it does (metadata refresh every %.0f s)",
            topic,
            max_age_ms / 1000,
        )


def _tune_gc() -> None:
    """Keep the cyclic GC off the hot path: kafka-python allocates several objects per record.

    Start-up objects (modules, pyarrow, settings) are frozen out of every future collection,
    and the young generation is collected every 50,000 allocations instead of 700.  Nothing the
    loop keeps is cyclic, so memory is still freed by reference counting as soon as it can be.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """Flush before partitions go; seek to the store's position when they come."""

    def __init__(self, service: IngestService) -> None:
        self.service = service

    def on_partitions_revoked(self, revoked: Any) -> None:
        self.service.on_revoked(list(revoked))

    def on_partitions_assigned(self, assigned: Any) -> None:
        self.service.on_assigned(list(assigned))


class IngestService:
    """Runs the consumer loop around an ``Ingestor``; ``stop()`` ends it after a final flush."""

    def __init__(self, settings: IngestSettings, stop: threading.Event | None = None) -> None:
        self.settings = settings
        self.store = EventStore(
            settings.store_path, writer=True, primary_topic=settings.primary_topic
        )
        legacy = self.store.legacy_topic
        if legacy is not None and legacy != settings.primary_topic:
            log.warning(
                "store offsets from before topics were recorded belong to %s (pinned), "
                "not to the primary topic %s",
                legacy,
                settings.primary_topic,
            )
        self.quality = QualityMonitor(settings.dq_window_lines, settings.dq_min_lines)
        self.cache: MetadataCache | None = None
        self.enricher: Enricher | None = None
        if settings.enrich_url:
            self.cache = MetadataCache(settings.store_path / CACHE_FILE)
            self.enricher = Enricher(
                MetadataClient(
                    settings.enrich_url,
                    timeout_s=settings.enrich_timeout_s,
                    max_attempts=settings.enrich_max_attempts,
                ),
                self.cache,
                batch_size=settings.enrich_batch_size,
                rate_per_s=settings.enrich_rate_per_s,
                on_lookup=self.quality.observe_lookup,
            )
        self.ingestor = Ingestor(
            self.store,
            quality=self.quality,
            on_commit=self._hand_to_enricher,
            flush_max_events=settings.flush_max_events,
            flush_max_bytes=settings.flush_max_bytes,
            flush_interval_s=settings.flush_interval_s,
            future_tolerance_s=settings.future_tolerance_s,
            max_lateness_s=settings.max_lateness_s,
            late_window_s=settings.late_window_s,
            quorum=settings.stream_time_quorum,
        )
        self._stop = stop or threading.Event()
        self._consumer: KafkaConsumer | None = None
        self._assigned: set[tuple[str, int]] = set()
        self._paused = False
        self._flush_backoff_s = 0.0
        self._next_flush_try = 0.0
        self._next_compact = time.monotonic() + settings.compact_interval_s
        self._alive = True
        self.started = time.time()

    # --- status for the ops port -------------------------------------------------------

    def healthy(self) -> bool:
        """Alive unless the loop died."""
        return self._alive

    def ready(self) -> tuple[bool, str]:
        """Ready when the store is open and the consumer holds at least one partition."""
        if not self._assigned:
            return False, "no partitions assigned"
        return True, f"partitions {_names(self._assigned)}"

    def stats(self) -> dict[str, Any]:
        """A small JSON view of progress."""
        return {
            "topics": list(self.settings.topics),
            "assigned": _names(self._assigned),
            "durable_offsets": by_topic(self.store.next_offsets()),
            "buffered_lines": self.ingestor.buffered,
            "commits": len(self.store.commits),
            "rows": self.store.counts(),
            "paused": self._paused,
        }

    # --- rebalance ----------------------------------------------------------------------

    def on_revoked(self, revoked: list[TopicPartition]) -> None:
        """Make what we hold durable before the partitions may go to another member."""
        self._try_flush()
        self._assigned -= {(tp.topic, tp.partition) for tp in revoked}
        metrics.ASSIGNED.set(len(self._assigned))

    def on_assigned(self, assigned: list[TopicPartition]) -> None:
        """Resume every partition right after what the store (or the buffer) already holds."""
        consumer = self._consumer
        for tp in assigned:
            nxt = self.ingestor.next_offset(tp.partition, tp.topic)
            if consumer is None:
                continue
            if nxt is not None:
                consumer.seek(tp, nxt)
            else:
                # The store is the only truth: a partition it has never seen is read from the
                # start, even if the group committed offsets for some earlier store.
                consumer.seek_to_beginning(tp)
            log.info(
                "partition assigned",
                extra={"topic": tp.topic, "partition": tp.partition, "seek_to": nxt},
            )
        self._assigned |= {(tp.topic, tp.partition) for tp in assigned}
        metrics.ASSIGNED.set(len(self._assigned))

    # --- loop ---------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to flush, commit and return (safe from a signal handler)."""
        self._stop.set()

    def run(self) -> int:
        """Consume until ``stop()``; return 0 after a clean final flush, 1 otherwise."""
        s = self.settings
        topics = list(s.topics)
        producer: KafkaProducer | None = None
        try:
            wanted = dict.fromkeys(topics, s.topic_partitions) if s.topic_partitions else {}
            if s.dlq_enabled:
                wanted[s.dlq_topic] = 1
            ensure_topics(s, wanted)
            if s.dlq_enabled:
                producer = make_producer(s, linger_ms=20)
                self.ingestor.dead_letters = KafkaDeadLetters(producer, s.dlq_topic)
            consumer = make_consumer(
                s,
                [],
                s.group_id,
                group_instance_id=s.group_instance_id,
                session_timeout_ms=s.session_timeout_ms,
                heartbeat_interval_ms=max(500, s.session_timeout_ms // 4),
                max_poll_records=s.max_poll_records,
                fetch_max_bytes=s.fetch_max_bytes,
                max_partition_fetch_bytes=min(s.fetch_max_bytes, 16 * 1024 * 1024),
                check_crcs=False,  # TCP and the broker check already; CRCs cost a third of a read
                metadata_max_age_ms=s.metadata_max_age_ms,
            )
            self._consumer = consumer
            _await_topics(consumer, topics, s.metadata_max_age_ms)
            consumer.subscribe(topics, listener=_Rebalance(self))
            if self.enricher is not None:
                self.enricher.start()
            log.info("ingest started", extra={"topics": topics, "store": str(s.store_path)})
            _tune_gc()
            self._loop(consumer)
            ok = self._final_flush()
            try:
                consumer.close(autocommit=False)
            except Exception:  # closing a consumer on a dead broker must not fail shutdown
                log.exception("consumer close failed")
            return 0 if ok else 1
        except Exception:
            self._alive = False
            log.exception("ingest loop failed")
            return 1
        finally:
            if self.enricher is not None:
                self.enricher.stop()
            if producer is not None:
                try:
                    producer.close(timeout=5)
                except Exception:
                    log.exception("producer close failed")
            self.store.close()

    def _loop(self, consumer: KafkaConsumer) -> None:
        next_lag = 0.0
        while not self._stop.is_set():
            try:
                batch = consumer.poll(timeout_ms=200)
            except KafkaError as exc:
                # Transient broker trouble: keep the buffer, keep trying; the store is the truth.
                log.warning("poll failed: %s", exc)
                self._stop.wait(1.0)
                continue
            for tp, records in batch.items():
                self.ingestor.add(tp.partition, records, tp.topic)
            if self.ingestor.should_flush() and time.monotonic() >= self._next_flush_try:
                self._try_flush()
            self._bound_memory(consumer)
            self._maybe_compact()
            if time.monotonic() >= next_lag:
                self._update_lag(consumer)
                next_lag = time.monotonic() + 2.0

    def _bound_memory(self, consumer: KafkaConsumer) -> None:
        """Stop fetching while a failing flush lets the buffer grow past twice its limit."""
        over = self.ingestor.buffered >= 2 * self.settings.flush_max_events
        if over and not self._paused:
            consumer.pause(*consumer.assignment())
            self._paused = True
            log.warning("buffer full; consumption paused until a flush succeeds")
        elif not over and self._paused:
            consumer.resume(*consumer.paused())
            self._paused = False

    def _try_flush(self) -> bool:
        """Flush and commit; on failure keep the buffer, back off, and say so."""
        try:
            commit = self.ingestor.flush()
        except Exception as exc:
            metrics.FLUSH_ERRORS.inc()
            self._flush_backoff_s = min(max(self._flush_backoff_s * 2, 0.5), 30.0)
            self._next_flush_try = time.monotonic() + self._flush_backoff_s
            log.warning("flush failed, retrying in %.1f s: %s", self._flush_backoff_s, exc)
            return False
        self._flush_backoff_s = 0.0
        if commit is not None:
            self._commit_offsets()
        return True

    def _maybe_compact(self) -> None:
        """Merge small files now and then; never lets a compaction problem stop ingestion."""
        interval = self.settings.compact_interval_s
        if interval <= 0 or time.monotonic() < self._next_compact:
            return
        self._next_compact = time.monotonic() + interval
        started = time.perf_counter()
        try:
            replaced = self.store.compact(self.settings.compact_min_files)
        except Exception:
            log.exception("compaction failed; the store is unchanged")
            return
        if replaced:
            log.info(
                "compacted",
                extra={"files": replaced, "seconds": round(time.perf_counter() - started, 3)},
            )

    def _commit_offsets(self) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        offsets = {
            TopicPartition(*tp): OffsetAndMetadata(nxt, "", -1)
            for tp, nxt in self.store.next_offsets().items()
            if tp in self._assigned
        }
        if not offsets:
            return
        try:
            consumer.commit(offsets)
        except Exception as exc:  # the store is the truth; a failed commit only delays lag data
            metrics.COMMIT_ERRORS.inc()
            log.warning("offset commit failed: %s", exc)

    def _final_flush(self, deadline_s: float = 20.0) -> bool:
        """Flush until it works or ``deadline_s`` passes (inside Kubernetes' 30 s grace)."""
        end = time.monotonic() + deadline_s
        while True:
            if self._try_flush():
                log.info("ingest stopped", extra={"offsets": self.store.next_offsets()})
                return True
            if time.monotonic() >= end:
                log.error("final flush failed; unflushed lines will be replayed on restart")
                return False
            time.sleep(min(self._flush_backoff_s, max(0.0, end - time.monotonic())))

    def _update_lag(self, consumer: KafkaConsumer) -> None:
        for tp in consumer.assignment():
            hw = consumer.highwater(tp)
            nxt = self.ingestor.next_offset(tp.partition, tp.topic)
            if hw is not None and nxt is not None:
                metrics.LAG.labels(tp.topic, str(tp.partition)).set(max(0, hw - nxt))

    def _hand_to_enricher(self, tables: dict[str, Any]) -> None:
        """Queue the committed batch's user and movie ids for metadata lookup."""
        enricher = self.enricher
        if enricher is None:
            return
        for kind, t in tables.items():
            if kind == "quarantine":
                continue
            enricher.submit("user", pc.unique(t["user_id"]).to_pylist())
            if "movie_id" in t.column_names:
                enricher.submit("movie", pc.unique(t["movie_id"]).to_pylist())
