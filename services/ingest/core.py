"""The plain core of ingest: records in, durable commits out; no Kafka, no HTTP.

``Ingestor.add(partition, records, topic)`` parses every record with the shared parser and
buffers valid events per type and rejected lines for the quarantine; ``flush()`` turns the buffer
into Arrow tables, hands rejected lines to the dead-letter sink, commits everything to the store
in one atomic step and returns the offsets that are now safe to commit to Kafka.

Several topics (the stream and the router's exposures) go into one store: everything below is
kept per (topic, partition), each topic with its own offsets and its own clock.

Exactly once: the store knows the next offset per (topic, partition); records below it are
replays (after a crash, a rebalance or a broker restart) and are skipped, so every offset is
stored at most once, and offsets are committed only after they are durable, so at least once.

Stream time (services/ingest/README.md defines it): per (topic, partition), the oldest event
time of the latest full block of ``quorum`` accepted lines, never decreasing; a new partition
starts at the median of its first ``quorum`` lines.  Lines are bounded by their Kafka record
time and by stream time, and only accepted lines move it, so no single line and no burst
shorter than ``quorum`` can move it at all.
"""

from __future__ import annotations

import logging
import re
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from services.common.events import (
    ExposureEvent,
    RateEvent,
    RecommendationEvent,
    Rejected,
    WatchEvent,
    parse,
)
from services.ingest import metrics
from services.ingest.quality import QualityMonitor
from services.ingest.store import (
    DEFAULT_TOPIC,
    KINDS,
    QUARANTINE,
    SCHEMAS,
    TOPIC_TYPE,
    Commit,
    EventStore,
    TopicPartition,
)

log = logging.getLogger(__name__)

# Reasons ingest adds to the parser's: the line parses, but its time cannot be trusted.
TIME_IN_FUTURE: Final = "time_in_future"
TOO_LATE: Final = "too_late"
MAX_RECO_IDS: Final = 20
_NS: Final = 1_000_000_000
_MS: Final = 1_000_000  # ns per ms: Kafka record timestamps are in ms
_SHAPE_RE: Final = re.compile(r"\d+")
_INF: Final = 1 << 62  # beyond any event time in ns (year 2116)
# A (topic, partition)'s stream time as [head, low, high, previous high, count]: ``head`` is stream
# time; low/high/count describe the block of accepted lines being filled, ``previous high`` is
# the newest time of the block before.  A list, not a class: the hot loop unpacks it per call.
_State = list[int]


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
    topic: str = DEFAULT_TOPIC


DeadLetterSink = Callable[[Sequence[DeadLetter]], None]
"""Delivers dead letters; raises when it could not (the flush is then retried)."""


def request_shape(line: str) -> str:
    """The request's method and first two path segments, digits masked: a line's shape."""
    request = line.split(",", 2)[-1].strip()
    method, _, path = request.partition(" ")
    if path.startswith("/"):
        request = f"{method} {'/'.join(path.split('?')[0].split('/')[:3])}"
    return _SHAPE_RE.sub("N", request)[:80]


# Columns the hot loop fills; topic and partition are the same for a whole ``add`` call.
_COLUMNS: Final[dict[str, tuple[str, ...]]] = {
    kind: tuple(f.name for f in SCHEMAS[kind] if f.name not in ("topic", "partition"))
    for kind in KINDS
}


# The exposure schema's columns after topic, partition and offset are ExposureEvent's fields.
_EXPOSURE_FIELDS: Final = _COLUMNS["exposure"][1:]


def _key_columns(runs: list[tuple[str, int, int]]) -> tuple[pa.Array, pa.Array]:
    """The topic and partition of every buffered row, from (topic, partition, rows) runs."""
    sizes = np.array([n for _, _, n in runs], dtype=np.int64)
    parts = np.repeat(np.array([p for _, p, _ in runs], dtype=np.int32), sizes)
    names = sorted({t for t, _, _ in runs})
    codes = np.repeat(np.array([names.index(t) for t, _, _ in runs], dtype=np.int32), sizes)
    topics = pa.DictionaryArray.from_arrays(pa.array(codes, pa.int32()), pa.array(names))
    return topics.cast(TOPIC_TYPE), pa.array(parts, pa.int32())


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
        # (topic, partition, rows) runs per kind: every ``add`` call is one partition.
        self.runs: dict[str, list[tuple[str, int, int]]] = {kind: [] for kind in KINDS}
        self.rejected: list[DeadLetter] = []
        self.ranges: dict[TopicPartition, list[int]] = {}
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
        quorum: int = 16,
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
        if quorum < 1:
            raise ValueError("quorum must be at least 1")
        self.quorum = quorum
        self._clock = clock
        # ``add`` without a topic: the store's primary topic (tests, single-topic callers).
        self.default_topic = store.primary_topic
        # Next offset to accept per (topic, partition): durable position plus what is buffered.
        self._next: dict[TopicPartition, int] = store.next_offsets()
        # Stream time per (topic, partition), recovered from the store so that a restart keeps
        # it; the block being filled starts afresh (it only ever delays a move of stream time).
        self._time: dict[TopicPartition, _State] = {
            tp: [h, _INF, -_INF, -_INF, 0] for tp, h in store.heads().items()
        }
        # A new partition's first records, held until ``quorum`` of them give its stream time,
        # with the event times that count for it (those not ahead of their record time).
        self._held: dict[TopicPartition, list[Record]] = {}
        self._held_times: dict[TopicPartition, list[int]] = {}
        self._buf = _Buffer()

    # --- positions --------------------------------------------------------------------------

    def next_offset(self, partition: int, topic: str | None = None) -> int | None:
        """Where consumption of ``partition`` must resume (None: nothing seen yet)."""
        return self._next.get((topic or self.default_topic, partition))

    def durable_offsets(self) -> dict[TopicPartition, int]:
        """Per (topic, partition), the next offset after everything durable in the store."""
        return self.store.next_offsets()

    @property
    def buffered(self) -> int:
        """Lines consumed and not yet committed."""
        return self._buf.lines + sum(map(len, self._held.values()))

    def stream_time(self, partition: int, topic: str | None = None) -> int | None:
        """The partition's stream time in ns (None until its first lines have set it)."""
        st = self._time.get((topic or self.default_topic, partition))
        return None if st is None else st[0]

    def should_flush(self) -> bool:
        """True when the buffer is full (lines or bytes) or its oldest line is too old."""
        b = self._buf
        lines = self.buffered
        if not lines:
            return False
        return (
            lines >= self.flush_max_events
            or b.nbytes >= self.flush_max_bytes
            or self._clock() - b.started >= self.flush_interval_s
        )

    # --- hot loop ---------------------------------------------------------------------------

    def add(self, partition: int, records: Iterable[Record], topic: str | None = None) -> int:
        """Parse and buffer one partition's records (in offset order); return lines taken.

        ``topic`` defaults to the store's primary topic.
        """
        if not self.buffered:
            self._buf.started = self._clock()
        tp = (topic or self.default_topic, partition)
        if tp not in self._time:
            return self._hold(tp, records)
        return self._take(tp, records)

    def _hold(self, partition: TopicPartition, records: Iterable[Record]) -> int:
        """Keep a new partition's first records until ``quorum`` of them set its stream time.

        The first lines get the same care as the rest: stream time starts at the median of
        their event times, and then each of them is judged against it like any later line.
        """
        held = self._held.setdefault(partition, [])
        times = self._held_times.setdefault(partition, [])
        before = len(held)
        nxt = held[-1].offset + 1 if held else self._next.get(partition, -1)
        records = list(records)
        replayed = 0
        for i, rec in enumerate(records):
            if rec.offset < nxt:
                replayed += 1
                continue
            nxt = rec.offset + 1
            held.append(rec)
            ev: Any = parse(rec.value)
            kt = rec.timestamp * _MS if rec.timestamp > 0 else _INF
            if type(ev) is not Rejected and ev.time_ns - kt <= self._future_ns:
                times.append(ev.time_ns)
            if len(times) >= self.quorum:
                if replayed:
                    metrics.REPLAYED.inc(replayed)
                self._start_stream_time(partition)
                return self._take(partition, [*self._held.pop(partition), *records[i + 1 :]]) - (
                    before
                )
        if replayed:
            metrics.REPLAYED.inc(replayed)
        return len(held) - before

    def _start_stream_time(self, partition: TopicPartition) -> None:
        """Stream time of a new partition: the median event time of its held lines."""
        times = self._held_times.pop(partition, [])
        if times:
            self._time[partition] = [statistics.median_high(times), _INF, -_INF, -_INF, 0]

    def _release_held(self) -> None:
        """Judge every held line now (a flush is due): stream time from what is there."""
        for partition in list(self._held):
            self._start_stream_time(partition)
            held = self._held.pop(partition)
            if partition in self._time:
                self._take(partition, held)
            else:
                # No line with a usable time: each is rejected (by the parser or as ahead of
                # its record time) before stream time is consulted; none may set it.
                self._time[partition] = [_INF, _INF, -_INF, -_INF, 0]
                self._take(partition, held)
                del self._time[partition]

    def _take(self, partition: TopicPartition, records: Iterable[Record]) -> int:
        """Parse, judge and buffer records of a partition whose stream time is known."""
        b = self._buf
        nxt = self._next.get(partition, -1)
        st = self._time[partition]
        head, low, high, prev, count = st
        quorum = self.quorum
        future_ns, late_ns, max_late_ns = self._future_ns, self._late_ns, self._max_late_ns
        sizes = {kind: len(b.cols[kind]["offset"]) for kind in KINDS}
        # Bound appends as locals: this loop runs once per line of the stream.
        w, r, c, x, e = (b.cols[k] for k in KINDS)
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
            # A record without a time (-1, old message formats) bounds nothing, vouches nothing.
            kt = rec.timestamp * _MS if rec.timestamp > 0 else _INF
            if t - kt > future_ns:
                # Stamped after it entered Kafka, by more than any clock skew we tolerate.
                ahead = f"{(t - kt) / _NS:.0f} s ahead of its Kafka record time"
                self._reject(partition, rec, TIME_IN_FUTURE, ahead)
                continue
            if t - head > future_ns and kt - t > future_ns and t - max(prev, high) > future_ns:
                # Far ahead of stream time and of the newest accepted lines, and the record time
                # does not vouch for it (a stream resuming after a pause is stamped near it).
                ahead = f"{(t - head) / _NS:.0f} s ahead of stream time"
                self._reject(partition, rec, TIME_IN_FUTURE, ahead)
                continue
            lag = head - t
            if lag > late_ns:
                if lag > max_late_ns:
                    self._reject(partition, rec, TOO_LATE, f"{lag / _NS:.0f} s behind stream time")
                    continue
                late += 1
            # Accepted.  Stream time moves to the oldest line of a full block: a burst shorter
            # than the quorum always shares its block with a normal line.
            if t < low:
                low = t
            if t > high:
                high = t
            count += 1
            if count == quorum:
                if low > head:
                    head = low
                prev, low, high, count = high, _INF, -_INF, 0
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
            elif cls is ExposureEvent:
                # One per served list, far rarer than watches: a plain loop is fast enough.
                e["offset"].append(off)
                for col in _EXPOSURE_FIELDS:
                    e[col].append(getattr(ev, col))
            else:
                c_o(off)
                c_t(t)
                c_d(ev.time_digits)
                c_u(ev.user_id)
        for kind in KINDS:
            added = len(b.cols[kind]["offset"]) - sizes[kind]
            if added:
                b.runs[kind].append((*partition, added))
        if replayed:
            metrics.REPLAYED.inc(replayed)
        if first >= 0:
            rng = b.ranges.get(partition)
            if rng is None:
                b.ranges[partition] = [first, nxt - 1]
            else:
                rng[1] = nxt - 1
            self._next[partition] = nxt
        st[:] = head, low, high, prev, count
        b.lines += n
        b.nbytes += nbytes
        b.late += late
        metrics.BUFFERED.set(b.lines)
        return n

    def _reject(self, tp: TopicPartition, rec: Record, reason: str, detail: str) -> None:
        topic, partition = tp
        self._buf.rejected.append(
            DeadLetter(
                partition, rec.offset, int(rec.timestamp), reason, detail, bytes(rec.value), topic
            )
        )

    # --- commit -----------------------------------------------------------------------------

    def flush(self) -> Commit | None:
        """Make the buffer durable (dead letters, then one store commit); None if it was empty.

        On failure the buffer is kept intact and the exception propagates: calling again
        retries the same batch (the dead-letter topic may then see a line twice; its headers
        carry topic, partition and offset to deduplicate; the store never does).
        """
        self._release_held()
        b = self._buf
        if not b.lines:
            return None
        started = time.perf_counter()
        tables = self._tables()
        if b.rejected and self.dead_letters is not None:
            self.dead_letters(b.rejected)
        offsets = {p: (r[0], r[1]) for p, r in b.ranges.items()}
        heads = {p: st[0] for p, st in self._time.items() if p in offsets}
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
            for (topic, p), nxt in self.store.next_offsets().items():
                metrics.DURABLE_OFFSET.labels(topic, str(p)).set(nxt)
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
            topics, parts = _key_columns(b.runs[kind])
            arrays = {"topic": topics, "partition": parts}
            for f in schema:
                if f.name not in arrays:
                    arrays[f.name] = pa.array(cols[f.name], f.type)
            out[kind] = pa.table(arrays, schema=schema)
        if b.rejected:
            rj = b.rejected
            schema = SCHEMAS[QUARANTINE]
            out[QUARANTINE] = pa.table(
                {
                    "topic": pa.array([r.topic for r in rj], pa.string()).dictionary_encode(),
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
