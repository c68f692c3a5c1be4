"""The exposure log: every answer becomes an exposure event on the Kafka topic ``exposures``.

Requests only put the event on a bounded in-memory queue (never blocking, never failing); a
background thread sends batches keyed by user id and waits for the broker's acknowledgement.
While Kafka is away the thread keeps the unacknowledged batch and retries it; once the queue is
full, new events are dropped and counted, so ``sent + dropped + buffered`` always equals the
events recorded, and the backlog catches up when the broker returns.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from services.common.events import ExposureEvent, format_line
from services.router.metrics import RouterMetrics

log = logging.getLogger("marquee.router.exposures")


class Producer(Protocol):
    """The part of kafka-python's ``KafkaProducer`` the log uses."""

    def send(self, topic: str, value: bytes | None = None, key: bytes | None = None) -> Any:
        """Queue a record; returns a future with ``succeeded()``/``failed()``/``exception``."""
        ...

    def flush(self, timeout: float | None = None) -> None:
        """Wait for queued records to be acknowledged (or fail)."""
        ...

    def close(self, timeout: float | None = None) -> None:
        """Release the client."""
        ...


class ExposureLog:
    """Bounded, asynchronous, batched exposure producer; see the module docstring."""

    def __init__(
        self,
        producer_factory: Callable[[], Producer],
        topic: str,
        metrics: RouterMetrics,
        *,
        buffer_size: int = 100_000,
        batch_size: int = 500,
        linger_s: float = 0.0,
        retry_s: float = 1.0,
        flush_timeout_s: float = 10.0,
    ) -> None:
        self._factory = producer_factory
        self.topic = topic
        self.metrics = metrics
        self.batch_size = batch_size
        self.linger_s = linger_s
        self.retry_s = retry_s
        self.flush_timeout_s = flush_timeout_s
        self._queue: queue.Queue[ExposureEvent] = queue.Queue(maxsize=buffer_size)
        self._pending: list[ExposureEvent] = []
        self._inflight: list[tuple[ExposureEvent, Any]] = []
        self._producer: Producer | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.recorded = 0
        self.sent = 0
        self.dropped = 0

    # --- request side ---------------------------------------------------------------------

    def record(self, event: ExposureEvent) -> bool:
        """Queue ``event`` for sending; False (and counted as dropped) when the buffer is full."""
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            with self._lock:
                self.recorded += 1
                self.dropped += 1
            self.metrics.exposures_dropped.labels("buffer_full").inc()
            return False
        with self._lock:
            self.recorded += 1
        self.metrics.exposures_buffered.inc()
        return True

    @property
    def buffered(self) -> int:
        """Events recorded but neither sent nor dropped yet."""
        with self._lock:
            return self.recorded - self.sent - self.dropped

    # --- sender thread --------------------------------------------------------------------

    def start(self) -> None:
        """Start the sender thread (after fork: threads do not survive it)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="exposure-log", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Send what is buffered for at most ``timeout`` seconds; drop (and count) the rest."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout + 1)
        left = len(self._pending) + len(self._inflight)
        self._pending, self._inflight = [], []
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
            left += 1
        if left:
            with self._lock:
                self.dropped += left
            self.metrics.exposures_dropped.labels("shutdown").inc(left)
            self.metrics.exposures_buffered.dec(left)
            log.warning("exposure events dropped at shutdown", extra={"events": left})
        if self._producer is not None:
            try:
                self._producer.close(timeout=2)
            except Exception:  # closing a client of a dead broker may complain; nothing to do
                log.debug("producer close failed", exc_info=True)
            self._producer = None

    def _run(self) -> None:
        drain_until: float | None = None
        while True:
            if self._stop.is_set():
                drain_until = drain_until or time.monotonic() + self.flush_timeout_s
                idle = not self._pending and not self._inflight and self._queue.empty()
                if idle or time.monotonic() > drain_until:
                    return
            if not self._pending and not self._inflight:
                self._fill()
                if not self._pending:
                    continue
            if not self.flush_once():
                self._stop.wait(self.retry_s)  # the broker is away: retry the batch later

    def _fill(self) -> None:
        try:
            self._pending.append(self._queue.get(timeout=0.2))
        except queue.Empty:
            return
        # Let a batch gather for linger_s: each flush is a produce request and its
        # acknowledgement, which cost the serving process far more CPU than the events do.
        # One sleep, not a wake-up per event.
        if self.linger_s > 0 and self._queue.qsize() < self.batch_size:
            self._stop.wait(self.linger_s)
        while len(self._pending) < self.batch_size:
            try:
                self._pending.append(self._queue.get_nowait())
            except queue.Empty:
                break

    def flush_once(self) -> bool:
        """Send the pending batch (or wait on the one in flight) once; True when all is acked.

        A send whose outcome is still unknown is waited on, never sent again: the producer's
        own (idempotent) retries deliver it without a duplicate once the broker is back.
        """
        if not self._inflight:
            if not self._pending:
                self._fill()
            if not self._pending:
                return True
            if not self._send_pending():
                return False
        assert self._producer is not None
        try:
            self._producer.flush(timeout=self.flush_timeout_s)
        except Exception as exc:  # flush timed out: the broker is slow or away
            log.warning("exposure flush incomplete: %s", exc)
        acked = 0
        unknown: list[tuple[ExposureEvent, Any]] = []
        failed: list[ExposureEvent] = []
        for event, fut in self._inflight:
            if not fut.is_done:
                unknown.append((event, fut))
            elif fut.succeeded():
                acked += 1
            else:
                failed.append(event)
        if acked:
            with self._lock:
                self.sent += acked
            self.metrics.exposures_sent.inc(acked)
            self.metrics.exposures_buffered.dec(acked)
        self._inflight = unknown
        # Events the producer gave up on are sent again, ahead of anything newer.
        self._pending = failed + self._pending
        return not unknown and not self._pending

    def _send_pending(self) -> bool:
        """Hand the pending batch to the producer; False when it cannot be created."""
        if self._producer is None:
            try:
                self._producer = self._factory()
            except Exception as exc:  # no broker yet: keep the batch, try again later
                log.warning("cannot create the exposure producer: %s", exc)
                return False
        producer = self._producer
        for i, event in enumerate(self._pending):
            try:
                fut = producer.send(
                    self.topic,
                    value=format_line(event).encode(),
                    key=str(event.user_id).encode(),
                )
            except Exception as exc:  # metadata wait timed out (max_block_ms): broker away
                log.warning("exposure send failed: %s", exc)
                self._pending = self._pending[i:]
                return bool(self._inflight)
            self._inflight.append((event, fut))
        self._pending = []
        return True
