"""The event store's writer: Parquet segments by kind and date, committed atomically with offsets.

Layout, schemas, kinds and the reader live in ``services.common.store`` (every service reads the
store; only ingest writes it).  Every row carries its Kafka ``topic``, ``partition`` and
``offset``; every file records its commit and offset ranges in the Parquet metadata.  A flush
writes its files (temp, fsync, rename), then its manifest the same way: the manifest is the
commit point.  Files no manifest names are leftovers of a crash and are deleted on open, so
readers and the writer see exactly the committed batches, and the next offset per (topic,
partition) is read back from the manifests.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from services.common.fsio import fsync_dir
from services.common.store import (
    COMMITS_DIR,
    DAY_NS,
    DEFAULT_TOPIC,
    KINDS,
    META_COMMIT,
    META_OFFSETS,
    QUARANTINE,
    SCHEMAS,
    STREAM_KINDS,
    TOPIC_TYPE,
    Commit,
    EventStoreReader,
    TopicPartition,
    by_topic,
    day_text,
    fill_topic,
    rows_to_events,
)

__all__ = [
    "COMMITS_DIR",
    "DAY_NS",
    "DEFAULT_TOPIC",
    "KINDS",
    "LOCK_FILE",
    "META_COMMIT",
    "META_OFFSETS",
    "QUARANTINE",
    "SCHEMAS",
    "STREAM_KINDS",
    "TOPIC_TYPE",
    "Commit",
    "EventStore",
    "EventStoreReader",
    "StoreError",
    "TopicPartition",
    "by_topic",
    "day_text",
    "rows_to_events",
]

LOCK_FILE: Final = ".writer.lock"


class StoreError(Exception):
    """The store is locked by another writer, or a commit could not be made durable."""


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


class EventStore(EventStoreReader):
    """A reader that, with ``writer=True``, is also the single writer of the store folder."""

    def __init__(
        self, root: Path | str, *, writer: bool = False, primary_topic: str = DEFAULT_TOPIC
    ) -> None:
        self.writer = writer
        self._lock_fd: int | None = None
        if writer:
            Path(root).mkdir(parents=True, exist_ok=True)
            (Path(root) / COMMITS_DIR).mkdir(exist_ok=True)
        super().__init__(root, primary_topic=primary_topic)
        if writer:
            self._lock()
            self._recover()

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
        offsets: Mapping[TopicPartition, tuple[int, int]],
        heads: Mapping[TopicPartition, int],
    ) -> Commit:
        """Make one flush durable: every table split by date, then the manifest (commit point).

        ``tables`` maps a kind (or ``quarantine``) to rows in the store schema; ``offsets`` is the
        inclusive offset range consumed per (topic, partition), lines that made no row included.
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
        commit = Commit(
            commit_id, files, dict(offsets), dict(heads), counts, legacy_topic=self.legacy_topic
        )
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
            if table["topic"].null_count:
                # Pre-topic rows get their topic written down: the merged file says it itself.
                table = fill_topic(table, self._legacy)
            table = table.take(_row_order(table))
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
                legacy_topic=self.legacy_topic,
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


def _row_order(table: pa.Table) -> pa.Array:
    """Indices sorting rows by (topic, partition, offset); Arrow cannot sort dictionaries."""
    keys = pa.table(
        {
            "topic": table["topic"].cast(pa.string()),
            "partition": table["partition"],
            "offset": table["offset"],
        }
    )
    return pc.sort_indices(keys, [(k, "ascending") for k in keys.column_names])


def _offset_ranges(table: pa.Table) -> dict[str, dict[str, list[int]]]:
    """Per topic and partition (as text, for JSON), [min, max] offset of the rows in ``table``."""
    keys = pa.table(
        {
            "topic": table["topic"].cast(pa.string()),
            "partition": table["partition"],
            "offset": table["offset"],
        }
    )
    g = keys.group_by(["topic", "partition"], use_threads=False).aggregate(
        [("offset", "min"), ("offset", "max")]
    )
    ranges: dict[TopicPartition, list[int]] = {
        (t, p): [lo, hi]
        for t, p, lo, hi in zip(
            g["topic"].to_pylist(),
            g["partition"].to_pylist(),
            g["offset_min"].to_pylist(),
            g["offset_max"].to_pylist(),
            strict=True,
        )
    }
    return by_topic(ranges)
