"""The plain core of ingest: records in, durable commits out; no Kafka, no HTTP.

``Ingestor.add(partition, records)`` parses every record with the shared parser and buffers
valid events per type and rejected lines for the quarantine; ``flush()`` turns the buffer into
Arrow tables, hands rejected lines to the dead-letter sink, commits everything to the store in
one atomic step and returns the offsets that are now safe to commit to Kafka.

Exactly once: the store knows the next offset per partition; records below it are replays
(after a crash, a rebalance or a broker restart) and are skipped, so every offset is stored at
most once, and offsets are committed only after they are durable, so at least once.
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from services.common.events import (
    RateEvent,
    RecommendationEvent,
    Rejected,
    WatchEvent,
    parse,
)
from services.ingest import metrics
from services.ingest.quality import QualityMonitor
from services.ingest.store import KINDS, QUARANTINE, SCHEMAS, Commit, EventStore

log = logging.getLogger(__name__)

# Reasons ingest adds to the parser's: the line parses, but its time cannot be trusted.
TIME_IN_FUTURE: Final = "time_in_future"
TOO_LATE: Final = "too_late"
MAX_RECO_IDS: Final = 20
_NS: Final = 1_000_000_000
_MS: Final = 1_000_000  # ns per ms: Kafka record timestamps are in ms
_SHAPE_RE: Final = re.compile(r"\d+")


class Record(Protocol):
    """What ingest needs of a Kafka record (``kafka.consumer.fetcher.ConsumerRecord`` has it)."""

    @property
    def offset(self) -> int: ...

    @property
    def value(self) -> bytes: ...

    @property
    def timestamp(self) -> int: ...


@dataclass(frozen=True)
class DeadLetter:
    """A rejected line on its way to the dead-letter topic."""

    partition: int
    offset: int
    kafka_time_ms: int
    reason: str
    detail: str
    raw: bytes


DeadLetterSink = Callable[[Sequence[DeadLetter]], None]
"""Delivers dead letters; raises when it could not (the flush is then retried)."""


def request_shape(line: str) -> str:
    """The request's method and first two path segments, digits masked: a line's shape."""
    request = line.split(",", 2)[-1].strip()
    method, _, path = request.partition(" ")
    if path.startswith("/"):
        request = f"{method} {'/'.join(path.split('?')[0].split('/')[:3])}"
    return _SHAPE_RE.sub("N", request)[:80]


_COLUMNS: Final[dict[str, tuple[str, ...]]] = {
    kind: tuple(f.name for f in SCHEMAS[kind] if f.name != "partition") for kind in KINDS
}


def _partition_column(runs: list[tuple[int, int]]) -> pa.Array:
    """The partition of every buffered row, from (partition, rows) runs."""
    parts = np.repeat(
        np.array([p for p, _ in runs], dtype=np.int32),
        np.array([n for _, n in runs], dtype=np.int64),
    )
    return pa.array(parts, pa.int32())


def _lists_with_duplicates(lists: pa.ChunkedArray) -> int:
    """How many lists hold some value twice (columnar: no Python loop over rows)."""
    arr = lists.combine_chunks()
    flat = pc.list_flatten(arr)
    if len(flat) == 0:
        return 0
    pairs = pa.table({"row": pc.list_parent_indices(arr), "id": flat})
    g = pairs.group_by(["row", "id"], use_threads=False).aggregate([("id", "count")])
    return len(pc.unique(g.filter(pc.greater(g["id_count"], 1))["row"]))


class _Buffer:
    """Lines consumed since the last commit: columns per kind, rejected lines, offset ranges.

    Values go straight into per-column lists of ints and strs, which the garbage collector
    does not track, rather than keeping hundreds of thousands of event objects alive.
    """

    def __init__(self) -> None:
        self.cols: dict[str, dict[str, list[Any]]] = {
            kind: {c: [] for c in _COLUMNS[kind]} for kind in KINDS
        }
        # (partition, rows) runs per kind: every ``add`` call is one partition.
        self.runs: dict[str, list[tuple[int, int]]] = {kind: [] for kind in KINDS}
        self.rejected: list[DeadLetter] = []
        self.ranges: dict[int, list[int]] = {}
        self.lines = 0
        self.nbytes = 0
        self.late = 0
        self.started = 0.0


class Ingestor:
    """Parse, validate and buffer stream records; commit them to the store exactly once."""

    def __init__(
        self,
        store: EventStore,
        *,
        dead_letters: DeadLetterSink | None = None,
        quality: QualityMonitor | None = None,
        on_commit: Callable[[dict[str, pa.Table]], None] | None = None,
        flush_max_events: int = 200_000,
        flush_max_bytes: int = 64 * 1024 * 1024,
        flush_interval_s: float = 10.0,
        future_tolerance_s: float = 86_400.0,
        max_lateness_s: float = 7 * 86_400.0,
        late_window_s: float = 3_600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.dead_letters = dead_letters
        self.quality = quality or QualityMonitor()
        self.on_commit = on_commit
        self.flush_max_events = flush_max_events
        self.flush_max_bytes = flush_max_bytes
        self.flush_interval_s = flush_interval_s
        self._future_ns = int(future_tolerance_s * _NS)
        self._max_late_ns = int(max_lateness_s * _NS)
        self._late_ns = int(late_window_s * _NS)
        self._clock = clock
        # Next offset to accept per partition: durable position plus what is buffered.
        self._next: dict[int, int] = store.next_offsets()
        # Latest accepted event time per partition; recovered from the store so that the time
        # checks give the same verdicts after a restart as without one.
        self._heads: dict[int, int] = store.heads()
        self._buf = _Buffer()

    # --- positions --------------------------------------------------------------------------

    def next_offset(self, partition: int) -> int | None:
        """Where consumption of ``partition`` must resume (None: nothing seen yet)."""
        return self._next.get(partition)

    def durable_offsets(self) -> dict[int, int]:
        """Per partition, the next offset after everything durable in the store."""
        return self.store.next_offsets()

    @property
    def buffered(self) -> int:
        """Lines consumed and not yet committed."""
        return self._buf.lines

    def should_flush(self) -> bool:
        """True when the buffer is full (lines or bytes) or its oldest line is too old."""
        b = self._buf
        if not b.lines:
            return False
        return (
            b.lines >= self.flush_max_events
            or b.nbytes >= self.flush_max_bytes
            or self._clock() - b.started >= self.flush_interval_s
        )

    # --- hot loop ---------------------------------------------------------------------------

    def add(self, partition: int, records: Iterable[Record]) -> int:
        """Parse and buffer one partition's records (in offset order); return lines accepted."""
        b = self._buf
        if not b.lines:
            b.started = self._clock()
        nxt = self._next.get(partition, -1)
        head = self._heads.get(partition)
        future_ns, late_ns, max_late_ns = self._future_ns, self._late_ns, self._max_late_ns
        sizes = {kind: len(b.cols[kind]["offset"]) for kind in KINDS}
        # Bound appends as locals: this loop runs once per line of the stream.
        w, r, c, x = (b.cols[k] for k in KINDS)
        w_o, w_t, w_d, w_u = (
            w["offset"].append,
            w["time_ns"].append,
            w["time_digits"].append,
            w["user_id"].append,
        )
        w_m, w_n = w["movie_id"].append, w["minute"].append
        r_o, r_t, r_d, r_u = (
            r["offset"].append,
            r["time_ns"].append,
            r["time_digits"].append,
            r["user_id"].append,
        )
        r_m, r_r = r["movie_id"].append, r["rating"].append
        c_o, c_t, c_d, c_u = (
            c["offset"].append,
            c["time_ns"].append,
            c["time_digits"].append,
            c["user_id"].append,
        )
        x_o, x_t, x_d, x_u = (
            x["offset"].append,
            x["time_ns"].append,
            x["time_digits"].append,
            x["user_id"].append,
        )
        x_h, x_s, x_r = x["host"].append, x["status"].append, x["result"].append
        x_e, x_ms = x["error"].append, x["response_time_ms"].append
        first = -1
        n = nbytes = replayed = late = 0
        for rec in records:
            off = rec.offset
            if off < nxt:
                replayed += 1  # already stored or buffered: a replay, not a new line
                continue
            nxt = off + 1
            if first < 0:
                first = off
            value = rec.value
            n += 1
            nbytes += len(value)
            # Any: the class test below is the dispatch; isinstance chains cost per line.
            ev: Any = parse(value)
            cls = type(ev)
            if cls is Rejected:
                self._reject(partition, rec, ev.reason.value, ev.detail)
                continue
            t = ev.time_ns
            if head is None or t > head:
                # Ahead of the head *and* of when the line entered Kafka: a stream that resumes
                # after a pause jumps ahead of its old head but not of its record timestamps.
                if head is not None and t - max(head, rec.timestamp * _MS) > future_ns:
                    self._reject(partition, rec, TIME_IN_FUTURE, f"{(t - head) / _NS:.0f} s ahead")
                    continue
                head = t
            elif head - t > late_ns:
                if head - t > max_late_ns:
                    self._reject(partition, rec, TOO_LATE, f"{(head - t) / _NS:.0f} s behind")
                    continue
                late += 1
            if cls is WatchEvent:
                w_o(off)
                w_t(t)
                w_d(ev.time_digits)
                w_u(ev.user_id)
                w_m(ev.movie_id)
                w_n(ev.minute)
            elif cls is RateEvent:
                r_o(off)
                r_t(t)
                r_d(ev.time_digits)
                r_u(ev.user_id)
                r_m(ev.movie_id)
                r_r(ev.rating)
            elif cls is RecommendationEvent:
                x_o(off)
                x_t(t)
                x_d(ev.time_digits)
                x_u(ev.user_id)
                x_h(ev.host)
                x_s(ev.status)
                x_r(ev.result)
                x_e(ev.error)
                x_ms(ev.response_time_ms)
            else:
                c_o(off)
                c_t(t)
                c_d(ev.time_digits)
                c_u(ev.user_id)
        for kind in KINDS:
            added = len(b.cols[kind]["offset"]) - sizes[kind]
            if added:
                b.runs[kind].append((partition, added))
        if replayed:
            metrics.REPLAYED.inc(replayed)
        if first >= 0:
            rng = b.ranges.get(partition)
            if rng is None:
                b.ranges[partition] = [first, nxt - 1]
            else:
                rng[1] = nxt - 1
            self._next[partition] = nxt
        if head is not None:
            self._heads[partition] = head
        b.lines += n
        b.nbytes += nbytes
        b.late += late
        metrics.BUFFERED.set(b.lines)
        return n

    def _reject(self, partition: int, rec: Record, reason: str, detail: str) -> None:
        self._buf.rejected.append(
            DeadLetter(partition, rec.offset, int(rec.timestamp), reason, detail, bytes(rec.value))
        )

    # --- commit -----------------------------------------------------------------------------

    def flush(self) -> Commit | None:
        """Make the buffer durable (dead letters, then one store commit); None if it was empty.

        On failure the buffer is kept intact and the exception propagates: calling again
        retries the same batch (the dead-letter topic may then see a line twice; its headers
        carry partition and offset to deduplicate; the store never does).
        """
        b = self._buf
        if not b.lines:
            return None
        started = time.perf_counter()
        tables = self._tables()
        if b.rejected and self.dead_letters is not None:
            self.dead_letters(b.rejected)
        offsets = {p: (r[0], r[1]) for p, r in b.ranges.items()}
        heads = {p: h for p, h in self._heads.items() if p in offsets}
        commit = self.store.commit(tables, offsets, heads)
        # Durable now: drop the buffer before anything else can fail, or a retry would store
        # the same lines a second time.
        self._buf = _Buffer()
        elapsed = time.perf_counter() - started
        try:
            metrics.FLUSH_SECONDS.observe(elapsed)
            metrics.FLUSHES.inc()
            metrics.SEGMENT_BYTES.inc(sum(int(f["bytes"]) for f in commit.files))
            metrics.BUFFERED.set(0)
            for p, nxt in self.store.next_offsets().items():
                metrics.DURABLE_OFFSET.labels(str(p)).set(nxt)
            self._account(b, tables)
            if self.on_commit is not None:
                self.on_commit(tables)
        except Exception:  # accounting and enrichment hand-off must never fail a durable commit
            log.exception("post-commit accounting failed")
        log.debug("committed", extra={"commit": commit.commit_id, "seconds": round(elapsed, 4)})
        return commit

    def _tables(self) -> dict[str, pa.Table]:
        b = self._buf
        out: dict[str, pa.Table] = {}
        for kind in KINDS:
            cols = b.cols[kind]
            if not cols["offset"]:
                continue
            schema = SCHEMAS[kind]
            arrays = {"partition": _partition_column(b.runs[kind])}
            for f in schema:
                if f.name != "partition":
                    arrays[f.name] = pa.array(cols[f.name], f.type)
            out[kind] = pa.table(arrays, schema=schema)
        if b.rejected:
            rj = b.rejected
            schema = SCHEMAS[QUARANTINE]
            out[QUARANTINE] = pa.table(
                {
                    "partition": pa.array([r.partition for r in rj], pa.int32()),
                    "offset": pa.array([r.offset for r in rj], pa.int64()),
                    "kafka_time_ms": pa.array([r.kafka_time_ms for r in rj], pa.int64()),
                    "reason": pa.array([r.reason for r in rj], pa.string()),
                    "detail": pa.array([r.detail for r in rj], pa.string()),
                    "line": pa.array([r.raw.decode("utf-8", "replace") for r in rj], pa.string()),
                    "raw": pa.array([r.raw for r in rj], pa.binary()),
                },
                schema=schema,
            )
        return out

    def _account(self, b: _Buffer, tables: dict[str, pa.Table]) -> None:
        """Metrics and data-quality counts of a committed batch."""
        counts: Counter[str] = Counter(lines=b.lines, late_events=b.late)
        metrics.LINES.inc(b.lines)
        for kind in KINDS:
            t = tables.get(kind)
            if t is not None:
                counts[f"event:{kind}"] = t.num_rows
                metrics.EVENTS.labels(kind).inc(t.num_rows)
        for r in b.rejected:
            counts[f"reason:{r.reason}"] += 1
        for key, n in counts.items():
            if key.startswith("reason:"):
                metrics.REJECTED.labels(key.removeprefix("reason:")).inc(n)
        reco = tables.get("recommendation")
        if reco is not None:
            lengths = pc.list_value_length(reco["result"])
            counts["reco_list_too_long"] = int(
                pc.sum(pc.greater(lengths, MAX_RECO_IDS)).as_py() or 0
            )
            counts["reco_list_duplicates"] = _lists_with_duplicates(reco["result"])
        if counts["reason:unknown_request"]:
            for r in b.rejected:
                if r.reason == "unknown_request":
                    self.quality.new_shape(request_shape(r.raw.decode("utf-8", "replace")))
        self.quality.observe(counts)
