"""The event store's read side: layout, schemas, kinds and a reader any service may use.

Ingest is the store's only writer (``services.ingest.store.EventStore``); the trainer, the
monitor and scripts read it with ``EventStoreReader`` without importing another service.

Layout under the store root::

    events/<kind>/date=YYYY-MM-DD/c<commit>.parquet   valid events (kind: watch, rate, ...)
    quarantine/date=YYYY-MM-DD/c<commit>.parquet      rejected lines (raw, reason, offset, ...)
    _commits/c<commit>.json                           one manifest per flush: files + offsets
    enrichment.sqlite3                                user/movie metadata cache

A manifest is the commit point of a flush: a reader sees exactly the files the manifests name
(minus those a later compaction replaced), so it never sees half a batch.  One store may hold
several Kafka topics (the stream and the router's exposures): positions and stream time are kept
per (topic, partition), and every row carries the topic, partition and offset it came from.

Stores from before topics were recorded (manifests without ``"format": 2``, files without a
``topic`` column) hold one topic, the store's *primary* topic: the reader attributes them to it.
Once a writer commits to such a store, every new manifest pins that topic (``legacy_topic``), so
reconfiguring the primary topic later cannot re-attribute the old offsets.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from services.common.events import (
    CreateAccountEvent,
    Event,
    ExposureEvent,
    RateEvent,
    RecommendationEvent,
    WatchEvent,
)

__all__ = [
    "COMMITS_DIR",
    "DAY_NS",
    "DEFAULT_TOPIC",
    "KINDS",
    "MANIFEST_FORMAT",
    "META_COMMIT",
    "META_OFFSETS",
    "QUARANTINE",
    "SCHEMAS",
    "STREAM_KINDS",
    "TOPIC_TYPE",
    "Commit",
    "EventStoreReader",
    "TopicPartition",
    "by_topic",
    "day_text",
    "fill_topic",
    "rows_to_events",
]

STREAM_KINDS: Final = ("watch", "rate", "create_account", "recommendation")
"""Kinds the streaming service logs: what training snapshots are built from."""
KINDS: Final = (*STREAM_KINDS, "exposure")
"""Every stored event kind; ``exposure`` is what our router served (its own schema)."""
QUARANTINE: Final = "quarantine"
COMMITS_DIR: Final = "_commits"
DAY_NS: Final = 86_400 * 1_000_000_000
META_COMMIT: Final = b"marquee.commit"
META_OFFSETS: Final = b"marquee.offsets"
COMMIT_FILE_RE: Final = re.compile(r"c(\d{10})\.(parquet|json)")
MANIFEST_FORMAT: Final = 2
"""Manifests keyed by topic; older ones (no ``format``) are keyed by partition only."""
DEFAULT_TOPIC: Final = "movielog"
"""The primary topic of a store unless told otherwise: what every pre-topic store held."""
TOPIC_TYPE: Final = pa.dictionary(pa.int32(), pa.string())
"""The ``topic`` column: a handful of distinct values, so dictionary-encoded (cheap)."""

TopicPartition = tuple[str, int]
"""(topic, partition): the unit positions and stream time are kept by."""

_KEY = [
    # Null only in files written before the store recorded topics; ``read`` fills it in.
    pa.field("topic", TOPIC_TYPE),
    pa.field("partition", pa.int32(), nullable=False),
    pa.field("offset", pa.int64(), nullable=False),
]
_TIME = [
    pa.field("time_ns", pa.int64(), nullable=False),
    pa.field("time_digits", pa.int8(), nullable=False),
    pa.field("user_id", pa.int64(), nullable=False),
]
SCHEMAS: Final[dict[str, pa.Schema]] = {
    "watch": pa.schema(
        [
            *_KEY,
            *_TIME,
            pa.field("movie_id", pa.string(), nullable=False),
            pa.field("minute", pa.int32(), nullable=False),
        ]
    ),
    "rate": pa.schema(
        [
            *_KEY,
            *_TIME,
            pa.field("movie_id", pa.string(), nullable=False),
            pa.field("rating", pa.int8(), nullable=False),
        ]
    ),
    "create_account": pa.schema([*_KEY, *_TIME]),
    "recommendation": pa.schema(
        [
            *_KEY,
            *_TIME,
            pa.field("host", pa.string(), nullable=False),
            pa.field("status", pa.int16(), nullable=False),
            pa.field("result", pa.list_(pa.string()), nullable=False),
            pa.field("error", pa.string()),
            pa.field("response_time_ms", pa.int32(), nullable=False),
        ]
    ),
    "exposure": pa.schema(
        [
            *_KEY,
            *_TIME,
            pa.field("experiment", pa.string(), nullable=False),
            pa.field("arm", pa.string(), nullable=False),
            pa.field("model_name", pa.string()),
            pa.field("model_version", pa.string()),
            pa.field("status", pa.int16(), nullable=False),
            pa.field("latency_ms", pa.int32(), nullable=False),
            pa.field("fallback", pa.string()),
            pa.field("items", pa.list_(pa.string()), nullable=False),
            pa.field("item_arms", pa.list_(pa.string())),
        ]
    ),
    QUARANTINE: pa.schema(
        [
            *_KEY,
            pa.field("kafka_time_ms", pa.int64(), nullable=False),
            pa.field("reason", pa.string(), nullable=False),
            pa.field("detail", pa.string(), nullable=False),
            pa.field("line", pa.string(), nullable=False),
            pa.field("raw", pa.binary(), nullable=False),
        ]
    ),
}


def day_text(day: int) -> str:
    """The ISO date of a day number (days since the epoch)."""
    return (_dt.date(1970, 1, 1) + _dt.timedelta(days=day)).isoformat()


@dataclass(frozen=True)
class Commit:
    """One committed flush: its files and, per (topic, partition), the offset range it consumed."""

    commit_id: int
    files: list[dict[str, Any]]
    offsets: dict[TopicPartition, tuple[int, int]]
    heads: dict[TopicPartition, int]
    counts: dict[str, int] = field(default_factory=dict)
    replaces: list[str] = field(default_factory=list)
    """Files a compaction commit supersedes (its own files hold exactly their rows)."""
    legacy_topic: str | None = None
    """The topic that manifests and rows from before topics were recorded belong to."""

    def to_json(self) -> dict[str, Any]:
        """The manifest document."""
        doc: dict[str, Any] = {
            "format": MANIFEST_FORMAT,
            "commit": self.commit_id,
            "files": self.files,
            "offsets": by_topic({tp: list(r) for tp, r in self.offsets.items()}),
            "heads": by_topic(self.heads),
            "counts": dict(sorted(self.counts.items())),
            "replaces": sorted(self.replaces),
        }
        if self.legacy_topic is not None:
            doc["legacy_topic"] = self.legacy_topic
        return doc

    @classmethod
    def from_json(cls, doc: Mapping[str, Any], legacy_topic: str = DEFAULT_TOPIC) -> Commit:
        """Parse a manifest document; a pre-topic one is read as ``legacy_topic``'s."""
        offsets: dict[TopicPartition, tuple[int, int]] = {}
        heads: dict[TopicPartition, int] = {}
        if int(doc.get("format", 1)) >= MANIFEST_FORMAT:
            for topic, parts in doc["offsets"].items():
                for p, r in parts.items():
                    offsets[(topic, int(p))] = (int(r[0]), int(r[1]))
            for topic, parts in doc.get("heads", {}).items():
                for p, h in parts.items():
                    heads[(topic, int(p))] = int(h)
        else:
            for p, r in doc["offsets"].items():
                offsets[(legacy_topic, int(p))] = (int(r[0]), int(r[1]))
            for p, h in doc.get("heads", {}).items():
                heads[(legacy_topic, int(p))] = int(h)
        return cls(
            commit_id=int(doc["commit"]),
            files=list(doc["files"]),
            offsets=offsets,
            heads=heads,
            counts=dict(doc.get("counts", {})),
            replaces=list(doc.get("replaces", [])),
            legacy_topic=doc.get("legacy_topic"),
        )


def by_topic(values: Mapping[TopicPartition, Any]) -> dict[str, dict[str, Any]]:
    """``{(topic, partition): v}`` as the JSON shape ``{topic: {"partition": v}}``, sorted."""
    out: dict[str, dict[str, Any]] = {}
    for (topic, p), v in sorted(values.items()):
        out.setdefault(topic, {})[str(p)] = v
    return out


class EventStoreReader:
    """Read-only view of an event store folder; ``refresh()`` sees commits made since.

    ``primary_topic`` is the topic pre-topic manifests and rows are read as, unless the store
    pinned one (module docstring).
    """

    def __init__(self, root: Path | str, *, primary_topic: str = DEFAULT_TOPIC) -> None:
        self.root = Path(root)
        self.primary_topic = primary_topic
        self._commits: list[Commit] = []
        self.refresh()

    def refresh(self) -> None:
        """Re-read the manifests (readers call this to see commits made since they opened)."""
        docs = []
        cdir = self.root / COMMITS_DIR
        for p in sorted(cdir.glob("c*.json")) if cdir.exists() else []:
            if COMMIT_FILE_RE.fullmatch(p.name):
                docs.append(json.loads(p.read_bytes()))
        # A topic pinned by a writer wins over the one we were given: it is what the old
        # offsets were read as when the store moved on, and must stay so.
        pinned = next((d["legacy_topic"] for d in docs if d.get("legacy_topic")), None)
        legacy = pinned or self.primary_topic
        commits = [Commit.from_json(d, legacy) for d in docs]
        commits.sort(key=lambda c: c.commit_id)
        self._commits = commits
        self._legacy = legacy
        self._has_legacy = any(int(d.get("format", 1)) < MANIFEST_FORMAT for d in docs)

    @property
    def legacy_topic(self) -> str | None:
        """The topic pre-topic manifests are read as, if the store has any (else None)."""
        return self._legacy if self._has_legacy else None

    @property
    def commits(self) -> list[Commit]:
        """Committed flushes, oldest first."""
        return list(self._commits)

    def next_offsets(self) -> dict[TopicPartition, int]:
        """Per (topic, partition), the first offset not yet stored (all before it is durable)."""
        out: dict[TopicPartition, int] = {}
        for c in self._commits:
            for tp, (_, hi) in c.offsets.items():
                out[tp] = max(out.get(tp, 0), hi + 1)
        return out

    def topic_offsets(self, topic: str) -> dict[int, int]:
        """``next_offsets`` of one topic, by partition."""
        return {p: o for (t, p), o in self.next_offsets().items() if t == topic}

    def heads(self) -> dict[TopicPartition, int]:
        """Per (topic, partition), the stream time at the last commit that consumed it."""
        out: dict[TopicPartition, int] = {}
        for c in self._commits:
            out.update(c.heads)
        return out

    def _active(self) -> list[dict[str, Any]]:
        """File entries of all commits, minus those a later compaction replaced."""
        replaced = {r for c in self._commits for r in c.replaces}
        return [f for c in self._commits for f in c.files if f["path"] not in replaced]

    def files(self, kind: str) -> list[Path]:
        """Committed files of ``kind`` (an event kind or ``quarantine``) in commit order."""
        return [self.root / f["path"] for f in self._active() if f["kind"] == kind]

    def read(
        self,
        kind: str,
        *,
        columns: list[str] | None = None,
        until_ns: int | None = None,
        since_ns: int | None = None,
    ) -> pa.Table:
        """All committed rows of ``kind``, optionally with ``since_ns <= time_ns < until_ns``.

        Rows come in commit order; callers that need an order sort (derived tables do).
        """
        try:
            return self._read(kind, columns, until_ns, since_ns)
        except FileNotFoundError:
            # A compaction replaced files since our last refresh: look again, once.
            self.refresh()
            return self._read(kind, columns, until_ns, since_ns)

    def _read(
        self, kind: str, columns: list[str] | None, until_ns: int | None, since_ns: int | None
    ) -> pa.Table:
        schema = SCHEMAS[kind]
        files = self.files(kind)
        if kind != QUARANTINE and (until_ns is not None or since_ns is not None):
            files = [f for f in files if _day_in_range(f, since_ns, until_ns)]
        if not files:
            empty = schema.empty_table()
            return empty.select(columns) if columns else empty
        dataset = ds.dataset([str(f) for f in files], schema=schema, format="parquet")
        expr = None
        if until_ns is not None and kind != QUARANTINE:
            expr = pc.field("time_ns") < until_ns
        if since_ns is not None and kind != QUARANTINE:
            lo = pc.field("time_ns") >= since_ns
            expr = lo if expr is None else expr & lo
        table: pa.Table = dataset.to_table(columns=columns, filter=expr)
        if "topic" in table.column_names and table["topic"].null_count:
            table = fill_topic(table, self._legacy)
        return table.replace_schema_metadata(None)

    def counts(self) -> dict[str, int]:
        """Committed rows per kind."""
        out: dict[str, int] = {}
        for f in self._active():
            out[f["kind"]] = out.get(f["kind"], 0) + int(f["rows"])
        return out

    def iter_events(self, until_ns: int | None = None) -> Iterator[tuple[int, int, Event]]:
        """(partition, offset, event) for every stored event (tests and audits; not fast)."""
        for kind in KINDS:
            yield from rows_to_events(kind, self.read(kind, until_ns=until_ns))


def fill_topic(table: pa.Table, topic: str) -> pa.Table:
    """Rows of pre-topic files (null ``topic``) attributed to ``topic``."""
    i = table.schema.get_field_index("topic")
    filled = pc.fill_null(table["topic"], pa.scalar(topic, TOPIC_TYPE))
    return table.set_column(i, table.schema.field(i), filled)


def _day_in_range(path: Path, since_ns: int | None, until_ns: int | None) -> bool:
    """Prune date folders wholly outside the range without opening their files."""
    day = (
        _dt.date.fromisoformat(path.parent.name.removeprefix("date=")) - _dt.date(1970, 1, 1)
    ).days
    if until_ns is not None and day * DAY_NS >= until_ns:
        return False
    return not (since_ns is not None and (day + 1) * DAY_NS <= since_ns)


def rows_to_events(kind: str, table: pa.Table) -> Iterator[tuple[int, int, Event]]:
    """Turn stored rows back into (partition, offset, event); ``format_line`` gives the line."""
    for r in table.to_pylist():
        p, o, t, d, u = r["partition"], r["offset"], r["time_ns"], r["time_digits"], r["user_id"]
        ev: Event
        if kind == "watch":
            ev = WatchEvent(t, u, r["movie_id"], r["minute"], d)
        elif kind == "rate":
            ev = RateEvent(t, u, r["movie_id"], r["rating"], d)
        elif kind == "create_account":
            ev = CreateAccountEvent(t, u, d)
        elif kind == "exposure":
            arms = r["item_arms"]
            ev = ExposureEvent(
                t,
                u,
                r["experiment"],
                r["arm"],
                r["model_name"],
                r["model_version"],
                r["status"],
                r["latency_ms"],
                r["fallback"],
                tuple(r["items"]),
                tuple(arms) if arms is not None else None,
                d,
            )
        elif kind == "recommendation":
            ev = RecommendationEvent(
                t,
                u,
                r["host"],
                r["status"],
                tuple(r["result"]),
                r["error"],
                r["response_time_ms"],
                d,
            )
        else:
            raise ValueError(f"not an event kind: {kind!r}")
        yield p, o, ev
