"""The event store: Parquet segments by event type and date, committed atomically with offsets.

Layout under the store root::

    events/<type>/date=YYYY-MM-DD/c<commit>.parquet   valid events (type: watch, rate, ...)
    quarantine/date=YYYY-MM-DD/c<commit>.parquet      rejected lines (raw, reason, offset, ...)
    _commits/c<commit>.json                           one manifest per flush: files + offsets
    enrichment.sqlite3                                user/movie metadata cache

Every row carries its Kafka ``partition`` and ``offset``; every file records its commit and
offset ranges in the Parquet metadata.  A flush writes its files (temp, fsync, rename), then
its manifest the same way: the manifest is the commit point.  Files no manifest names are
leftovers of a crash and are deleted on open, so readers and the writer see exactly the
committed batches, and the next offset per partition is read back from the manifests.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from services.common.events import (
    CreateAccountEvent,
    Event,
    RateEvent,
    RecommendationEvent,
    WatchEvent,
)
from services.common.fsio import fsync_dir

KINDS: Final = ("watch", "rate", "create_account", "recommendation")
QUARANTINE: Final = "quarantine"
COMMITS_DIR: Final = "_commits"
LOCK_FILE: Final = ".writer.lock"
DAY_NS: Final = 86_400 * 1_000_000_000
META_COMMIT: Final = b"marquee.commit"
META_OFFSETS: Final = b"marquee.offsets"
_COMMIT_RE: Final = re.compile(r"c(\d{10})\.(parquet|json)")

_KEY = [
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


class StoreError(Exception):
    """The store is locked by another writer, or a commit could not be made durable."""


def day_text(day: int) -> str:
    """The ISO date of a day number (days since the epoch)."""
    return (_dt.date(1970, 1, 1) + _dt.timedelta(days=day)).isoformat()


def _atomic_write(path: Path, write: Any) -> int:
    """Write via ``write(tmp_path)`` to a temp name, fsync, rename into place; return the size."""
    new_dir = not path.parent.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    if new_dir:
        # A new date folder must itself survive a crash, or the renamed file vanishes with it.
        fsync_dir(path.parent.parent)
    tmp = path.with_name(f".tmp-{path.name}")
    write(tmp)
    with tmp.open("rb") as fh:
        os.fsync(fh.fileno())
    size = tmp.stat().st_size
    tmp.rename(path)
    fsync_dir(path.parent)
    return size


@dataclass(frozen=True)
class Commit:
    """One committed flush: its files and, per partition, the offset range it consumed."""

    commit_id: int
    files: list[dict[str, Any]]
    offsets: dict[int, tuple[int, int]]
    heads: dict[int, int]
    counts: dict[str, int] = field(default_factory=dict)
    replaces: list[str] = field(default_factory=list)
    """Files a compaction commit supersedes (its own files hold exactly their rows)."""

    def to_json(self) -> dict[str, Any]:
        """The manifest document."""
        return {
            "commit": self.commit_id,
            "files": self.files,
            "offsets": {str(p): list(r) for p, r in sorted(self.offsets.items())},
            "heads": {str(p): h for p, h in sorted(self.heads.items())},
            "counts": dict(sorted(self.counts.items())),
            "replaces": sorted(self.replaces),
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Commit:
        """Parse a manifest document."""
        return cls(
            commit_id=int(doc["commit"]),
            files=list(doc["files"]),
            offsets={int(p): (int(r[0]), int(r[1])) for p, r in doc["offsets"].items()},
            heads={int(p): int(h) for p, h in doc.get("heads", {}).items()},
            counts=dict(doc.get("counts", {})),
            replaces=list(doc.get("replaces", [])),
        )


class EventStore:
    """Reader (and, with ``writer=True``, the single writer) of an event store folder."""

    def __init__(self, root: Path | str, *, writer: bool = False) -> None:
        self.root = Path(root)
        self.writer = writer
        self._lock_fd: int | None = None
        self._commits: list[Commit] = []
        if writer:
            self.root.mkdir(parents=True, exist_ok=True)
            (self.root / COMMITS_DIR).mkdir(exist_ok=True)
            self._lock()
            self._recover()
        self.refresh()

    # --- writer ---------------------------------------------------------------------------

    def _lock(self) -> None:
        fd = os.open(self.root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(fd)
            raise StoreError(f"{self.root} is locked by another ingest writer") from exc
        self._lock_fd = fd

    def close(self) -> None:
        """Release the writer lock."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _recover(self) -> None:
        """Delete what a crash left behind: temp files and files no manifest names."""
        for tmp in (self.root / COMMITS_DIR).glob(".tmp-*"):
            tmp.unlink()
        self.refresh()
        named = {f["path"] for f in self._active()}
        for sub in ("events", QUARANTINE):
            base = self.root / sub
            if not base.exists():
                continue
            for p in base.rglob("*"):
                if p.is_file() and (p.name.startswith(".tmp-") or p.suffix == ".parquet"):
                    rel = p.relative_to(self.root).as_posix()
                    if rel not in named:
                        p.unlink()

    def commit(
        self,
        tables: Mapping[str, pa.Table],
        offsets: Mapping[int, tuple[int, int]],
        heads: Mapping[int, int],
    ) -> Commit:
        """Make one flush durable: every table split by date, then the manifest (commit point).

        ``tables`` maps a kind (or ``quarantine``) to rows in the store schema; ``offsets`` is the
        inclusive offset range consumed per partition, including lines that produced no row.
        """
        if not self.writer:
            raise StoreError("store opened read-only")
        commit_id = (self._commits[-1].commit_id + 1) if self._commits else 1
        name = f"c{commit_id:010d}.parquet"
        files: list[dict[str, Any]] = []
        counts: dict[str, int] = {}
        for kind in (*KINDS, QUARANTINE):
            table = tables.get(kind)
            if table is None or table.num_rows == 0:
                continue
            counts[kind] = table.num_rows
            for day, part in _split_by_day(kind, table):
                rel = (
                    f"{QUARANTINE}/date={day_text(day)}/{name}"
                    if kind == QUARANTINE
                    else f"events/{kind}/date={day_text(day)}/{name}"
                )
                ranges = _offset_ranges(part)
                meta = {
                    META_COMMIT: str(commit_id).encode(),
                    META_OFFSETS: json.dumps(ranges, sort_keys=True).encode(),
                }
                part = part.replace_schema_metadata(meta)
                size = _atomic_write(
                    self.root / rel,
                    lambda tmp, t=part: pq.write_table(
                        t, tmp, compression="zstd", compression_level=1, row_group_size=1 << 20
                    ),
                )
                files.append(
                    {
                        "path": rel,
                        "kind": kind,
                        "rows": part.num_rows,
                        "bytes": size,
                        "offsets": ranges,
                    }
                )
        commit = Commit(commit_id, files, dict(offsets), dict(heads), counts)
        body = json.dumps(commit.to_json(), sort_keys=True).encode()
        _atomic_write(
            self.root / COMMITS_DIR / f"c{commit_id:010d}.json", lambda tmp: tmp.write_bytes(body)
        )
        self._commits.append(commit)
        return commit

    def compact(self, min_files: int = 2) -> int:
        """Merge every (kind, date) folder holding ``min_files`` or more files into one file.

        The merged file and a manifest naming the files it replaces are made durable first;
        only then are the old files deleted (a crash in between leaves them to ``_recover``).
        Rows keep their partition and offset, so nothing a reader derives changes.  Returns the
        number of files replaced.
        """
        if not self.writer:
            raise StoreError("store opened read-only")
        groups: dict[str, list[dict[str, Any]]] = {}
        for f in self._active():
            groups.setdefault(f["path"].rsplit("/", 1)[0], []).append(f)
        replaced = 0
        for folder, entries in sorted(groups.items()):
            if len(entries) < min_files:
                continue
            kind = entries[0]["kind"]
            table = pq.read_table([self.root / f["path"] for f in entries], schema=SCHEMAS[kind])
            table = table.sort_by([("partition", "ascending"), ("offset", "ascending")])
            commit_id = self._commits[-1].commit_id + 1
            rel = f"{folder}/c{commit_id:010d}.parquet"
            ranges = _offset_ranges(table)
            table = table.replace_schema_metadata(
                {
                    META_COMMIT: str(commit_id).encode(),
                    META_OFFSETS: json.dumps(ranges, sort_keys=True).encode(),
                }
            )
            size = _atomic_write(
                self.root / rel,
                lambda tmp, t=table: pq.write_table(
                    t, tmp, compression="zstd", compression_level=3, row_group_size=1 << 20
                ),
            )
            old = [f["path"] for f in entries]
            commit = Commit(
                commit_id,
                [
                    {
                        "path": rel,
                        "kind": kind,
                        "rows": table.num_rows,
                        "bytes": size,
                        "offsets": ranges,
                    }
                ],
                {},
                {},
                {kind: table.num_rows},
                old,
            )
            body = json.dumps(commit.to_json(), sort_keys=True).encode()
            _atomic_write(
                self.root / COMMITS_DIR / f"c{commit_id:010d}.json",
                lambda tmp, b=body: tmp.write_bytes(b),
            )
            self._commits.append(commit)
            for path in old:
                (self.root / path).unlink(missing_ok=True)
            replaced += len(old)
        return replaced

    # --- reader ---------------------------------------------------------------------------

    def refresh(self) -> None:
        """Re-read the manifests (readers call this to see commits made since they opened)."""
        commits = []
        cdir = self.root / COMMITS_DIR
        for p in sorted(cdir.glob("c*.json")) if cdir.exists() else []:
            if _COMMIT_RE.fullmatch(p.name):
                commits.append(Commit.from_json(json.loads(p.read_bytes())))
        commits.sort(key=lambda c: c.commit_id)
        self._commits = commits

    @property
    def commits(self) -> list[Commit]:
        """Committed flushes, oldest first."""
        return list(self._commits)

    def next_offsets(self) -> dict[int, int]:
        """Per partition, the first offset not yet stored (everything before it is durable)."""
        out: dict[int, int] = {}
        for c in self._commits:
            for p, (_, hi) in c.offsets.items():
                out[p] = max(out.get(p, 0), hi + 1)
        return out

    def heads(self) -> dict[int, int]:
        """Per partition, the stream head (latest accepted event time) at the last commit."""
        out: dict[int, int] = {}
        for c in self._commits:
            out.update(c.heads)
        return out

    def _active(self) -> list[dict[str, Any]]:
        """File entries of all commits, minus those a later compaction replaced."""
        replaced = {r for c in self._commits for r in c.replaces}
        return [f for c in self._commits for f in c.files if f["path"] not in replaced]

    def files(self, kind: str) -> list[Path]:
        """Committed files of ``kind`` (an event type or ``quarantine``) in commit order."""
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
        return dataset.to_table(columns=columns, filter=expr).replace_schema_metadata(None)

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


def _day_in_range(path: Path, since_ns: int | None, until_ns: int | None) -> bool:
    """Prune date folders wholly outside the range without opening their files."""
    day = (
        _dt.date.fromisoformat(path.parent.name.removeprefix("date=")) - _dt.date(1970, 1, 1)
    ).days
    if until_ns is not None and day * DAY_NS >= until_ns:
        return False
    return not (since_ns is not None and (day + 1) * DAY_NS <= since_ns)


def _split_by_day(kind: str, table: pa.Table) -> list[tuple[int, pa.Table]]:
    if kind == QUARANTINE:
        days = pc.divide(table["kafka_time_ms"], pa.scalar(86_400_000, pa.int64()))
    else:
        days = pc.divide(table["time_ns"], pa.scalar(DAY_NS, pa.int64()))
    lo, hi = pc.min_max(days).values()
    if lo.as_py() == hi.as_py():
        return [(int(lo.as_py()), table)]
    out = []
    for day in sorted(pc.unique(days).to_pylist()):
        out.append((int(day), table.filter(pc.equal(days, day))))
    return out


def _offset_ranges(table: pa.Table) -> dict[str, list[int]]:
    """Per partition (as text, for JSON), [min, max] offset of the rows in ``table``."""
    parts = table["partition"]
    out: dict[str, list[int]] = {}
    for p in pc.unique(parts).to_pylist():
        offs = table["offset"].filter(pc.equal(parts, p))
        lo, hi = pc.min_max(offs).values()
        out[str(p)] = [int(lo.as_py()), int(hi.as_py())]
    return out


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
        else:
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
        yield p, o, ev
