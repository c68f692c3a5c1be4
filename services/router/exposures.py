"""The exposure log: every answer becomes an exposure event on the Kafka topic ``exposures``.

A request hands its event to librdkafka (confluent-kafka's ``Producer``), whose bounded queue
takes it without blocking and whose own threads batch, send and retry it, keyed by user id,
outside the GIL.  While Kafka is away events wait in that queue (the producer is idempotent and
never gives up on them, so the backlog catches up, in order and without duplicates, when the
broker returns); once the queue is full, new events are dropped and counted.  A Python thread
serves the producer's reports and keeps the counters, so ``sent + dropped + buffered`` always
equals the events recorded.

Why librdkafka and not kafka-python (which ingest uses): on the router's hot path kafka-python
cost about 39 µs of CPU per event, a quarter of the router's whole CPU per request, and its
sender thread competes for the GIL with the event loop; librdkafka costs about 6 µs
(benchmarks/bench_router.py measures the router's CPU per request).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any, Protocol

from confluent_kafka import KafkaError

from services.common.events import ExposureEvent, format_line
from services.router.metrics import RouterMetrics

log = logging.getLogger("marquee.router.exposures")

# librdkafka's codes of a message removed by ``purge`` (at shutdown).
_PURGED = frozenset({KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT})


class Producer(Protocol):
    """The part of confluent-kafka's ``Producer`` the log uses."""

    def produce(self, topic: str, value: bytes, key: bytes) -> None:
        """Queue a record; ``BufferError`` when the bounded queue is full."""
        ...

    def poll(self, timeout: float) -> int:
        """Serve queued delivery reports and logs for up to ``timeout`` seconds."""
        ...

    def flush(self, timeout: float) -> int:
        """Wait up to ``timeout`` seconds for every record's outcome; how many are left."""
        ...

    def purge(self, in_queue: bool = True, in_flight: bool = True) -> None:
        """Give up on every record not yet acknowledged (each gets a failed report)."""
        ...

    def __len__(self) -> int:
        """Records queued or in flight, and reports not yet served."""
        ...


ProducerFactory = Callable[[Callable[[Any, Any], None]], Producer]
"""Makes a producer whose failed deliveries are reported to the given callback."""


def producer_config(
    bootstrap_servers: str,
    *,
    buffer_size: int,
    batch_size: int,
    linger_s: float,
    request_timeout_ms: int,
) -> dict[str, Any]:
    """librdkafka settings of the exposure producer (``on_delivery`` is added by the log)."""
    return {
        "bootstrap.servers": bootstrap_servers,
        "client.id": f"marquee-router-{os.getpid()}",
        # The broker drops a batch it already holds when a retry follows a lost acknowledgement:
        # the producer's own retries never write an event twice, and keep the order per user.
        "enable.idempotence": True,
        "acks": "all",
        # Never give up on an event (0 = no local timeout): an outage fills the queue, whose
        # overflow is counted, rather than failing what was accepted.
        "message.timeout.ms": 0,
        "request.timeout.ms": request_timeout_ms,
        "queue.buffering.max.messages": buffer_size,
        "batch.num.messages": batch_size,
        # Fewer, fuller produce requests: each costs the broker far more than its events do.
        "linger.ms": int(linger_s * 1000),
        "reconnect.backoff.max.ms": 1000,  # catch up within a second of the broker's return
        # Only failures reach Python: per-event reports would cost a callback per request.
        "delivery.report.only.error": True,
        "logger": logging.getLogger("marquee.router.kafka"),
    }


class ExposureLog:
    """Bounded, asynchronous, batched exposure producer; see the module docstring."""

    def __init__(
        self,
        producer_factory: ProducerFactory,
        topic: str,
        metrics: RouterMetrics,
        *,
        poll_s: float = 0.2,
    ) -> None:
        self._factory = producer_factory
        self.topic = topic
        self.metrics = metrics
        self.poll_s = poll_s
        self._producer: Producer | None = None
        self._pid = -1
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.recorded = 0
        self.sent = 0
        self.dropped = 0
        self._accepted = 0  # taken by the producer
        self._failed = 0  # reported failed by the producer

    # --- request side ---------------------------------------------------------------------

    def record(self, event: ExposureEvent) -> bool:
        """Queue ``event`` for sending; False (and counted as dropped) when it cannot be."""
        producer = self._producer if self._pid == os.getpid() else self._ensure_producer()
        if producer is None:
            return self._drop("no_producer")
        try:
            producer.produce(self.topic, format_line(event).encode(), str(event.user_id).encode())
        except BufferError:
            return self._drop("buffer_full")
        except Exception as exc:  # a record the client refuses outright (never seen in practice)
            log.warning("exposure event refused by the producer: %s", exc)
            return self._drop("refused")
        with self._lock:
            self.recorded += 1
            self._accepted += 1
        self.metrics.exposures_buffered.inc()
        return True

    def _drop(self, reason: str) -> bool:
        with self._lock:
            self.recorded += 1
            self.dropped += 1
        self.metrics.exposures_dropped.labels(reason).inc()
        return False

    @property
    def buffered(self) -> int:
        """Events recorded but neither sent nor dropped yet."""
        with self._lock:
            return self.recorded - self.sent - self.dropped

    # --- producer and reports -------------------------------------------------------------

    def _ensure_producer(self) -> Producer | None:
        # librdkafka's threads do not survive fork: each process (gunicorn worker) makes its own.
        with self._lock:
            if self._pid != os.getpid():
                self._producer, self._pid = None, os.getpid()
                self._thread = None
                self._accepted = self._failed = 0
                self.recorded = self.sent = self.dropped = 0
                try:
                    self._producer = self._factory(self._on_delivery)
                except Exception:  # a bad client setting: loud, and every event is counted
                    log.exception("cannot create the exposure producer")
            return self._producer

    def _on_delivery(self, err: Any, msg: Any) -> None:
        """A failed delivery (only failures are reported): counted as dropped with its reason."""
        if err is None:
            return
        reason = "shutdown" if err.code() in _PURGED else "delivery_failed"
        with self._lock:
            self._failed += 1
            self.dropped += 1
        self.metrics.exposures_dropped.labels(reason).inc()
        self.metrics.exposures_buffered.dec()
        if reason != "shutdown":
            log.warning("exposure event not delivered: %s", err)

    def poll_once(self, timeout: float = 0.0) -> None:
        """Serve the producer's reports, then count what was acknowledged since last time."""
        producer = self._producer
        if producer is None or self._pid != os.getpid():
            return
        producer.poll(timeout)
        self._count_acknowledged(producer)

    def _count_acknowledged(self, producer: Producer) -> None:
        with self._lock:
            # Accepted and no longer held by the producer, and not reported failed: acknowledged.
            # A request may be between produce() and its count; max() keeps the counter honest
            # (never above the truth, exact at the next poll).
            acked = max(self.sent, self._accepted - len(producer) - self._failed)
            new = acked - self.sent
            self.sent = acked
        if new:
            self.metrics.exposures_sent.inc(new)
            self.metrics.exposures_buffered.dec(new)

    # --- background thread ----------------------------------------------------------------

    def start(self) -> None:
        """Create this process's producer and start its report thread (after fork)."""
        self._ensure_producer()
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="exposure-log", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.poll_once(self.poll_s)

    def stop(self, timeout: float = 10.0) -> None:
        """Send what is buffered for at most ``timeout`` seconds; drop (and count) the rest."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.poll_s + 1)
            self._thread = None
        producer = self._producer if self._pid == os.getpid() else None
        if producer is None:
            return
        producer.flush(timeout)
        self._count_acknowledged(producer)
        left = len(producer)
        if left:
            # Reports of the purged records count them as dropped ("shutdown").
            producer.purge(in_queue=True, in_flight=True)
            producer.flush(1.0)
            log.warning("exposure events dropped at shutdown", extra={"events": left})
        self._count_acknowledged(producer)
        self._producer, self._pid = None, -1  # a later start (tests) makes a new one
