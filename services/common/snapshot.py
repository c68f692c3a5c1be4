"""The training snapshot format: what ingest writes and the trainer reads.

A snapshot is an immutable folder of Parquet tables plus ``manifest.json``:

- ``interactions.parquet``: one row per (user, movie, time bucket of ``watch_grain_ns``): the
  distinct minutes of the movie the user streamed for the first time within that bucket, the
  largest of them, and ``time_ns``, the earliest of those first times
- ``ratings.parquet``: every rating, one row per (user, movie, time)
- ``users.parquet`` and ``movies.parquet``: metadata, nullable where unknown

Rows are sorted by key and the manifest carries no wall-clock time, so the same inputs give
the same bytes; ``content_hash`` is the sha256 over the files' hashes.

Watches and ratings are not aggregated per (user, movie): a consumer cuts them at its own
boundaries (the trainer's periods) and aggregates within, so nothing after a boundary leaks
into a quantity computed for before it (format 2; format 1 held whole-snapshot aggregates).
A cut is exact for watches when it is a multiple of the manifest's ``watch_grain_ns`` (buckets
are aligned to the epoch): every minute of a row whose ``time_ns`` lies before such a cut was
streamed before it.  The grain keeps the table near one row per viewing session instead of one
per watch line (a 90-minute session is 90 lines); 1 means one row per first-streamed time.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from services.common.fsio import fsync_dir, fsync_files

FORMAT_VERSION: Final = 2
MANIFEST: Final = "manifest.json"

SCHEMAS: Final[dict[str, pa.Schema]] = {
    "interactions": pa.schema(
        [
            pa.field("user_id", pa.int64(), nullable=False),
            pa.field("movie_id", pa.string(), nullable=False),
            pa.field("time_ns", pa.int64(), nullable=False),
            pa.field("minutes", pa.int32(), nullable=False),  # distinct minutes first streamed
            pa.field("max_minute", pa.int32(), nullable=False),
        ]
    ),
    "ratings": pa.schema(
        [
            pa.field("user_id", pa.int64(), nullable=False),
            pa.field("movie_id", pa.string(), nullable=False),
            pa.field("rating", pa.int8(), nullable=False),
            pa.field("time_ns", pa.int64(), nullable=False),
        ]
    ),
    "users": pa.schema(
        [
            pa.field("user_id", pa.int64(), nullable=False),
            pa.field("age", pa.int16()),
            pa.field("gender", pa.string()),
            pa.field("occupation", pa.string()),
        ]
    ),
    "movies": pa.schema(
        [
            pa.field("movie_id", pa.string(), nullable=False),
            pa.field("title", pa.string()),
            pa.field("year", pa.int16()),
            pa.field("genres", pa.list_(pa.string())),
            pa.field("original_language", pa.string()),
            pa.field("runtime", pa.int32()),
            pa.field("popularity", pa.float64()),
            pa.field("vote_average", pa.float64()),
            pa.field("vote_count", pa.int64()),
        ]
    ),
}
SORT_KEYS: Final[dict[str, list[str]]] = {
    "interactions": ["user_id", "movie_id", "time_ns"],
    "ratings": ["user_id", "movie_id", "time_ns"],
    "users": ["user_id"],
    "movies": ["movie_id"],
}
TIME_COLUMNS: Final[dict[str, tuple[str, str]]] = {
    "interactions": ("time_ns", "time_ns"),
    "ratings": ("time_ns", "time_ns"),
}


class SnapshotError(Exception):
    """A snapshot is missing, malformed or does not match its manifest."""


@dataclass(frozen=True)
class Snapshot:
    """A loaded snapshot: its four tables and its manifest."""

    path: Path
    manifest: dict[str, Any]
    interactions: pa.Table
    ratings: pa.Table
    users: pa.Table
    movies: pa.Table

    @property
    def content_hash(self) -> str:
        """sha256 over the files' hashes: the snapshot's identity."""
        return str(self.manifest["content_hash"])


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def conform(name: str, table: pa.Table) -> pa.Table:
    """Cast ``table`` to the snapshot schema ``name`` and sort it by key (deterministic bytes)."""
    schema = SCHEMAS[name]
    missing = [f.name for f in schema if f.name not in table.column_names]
    if missing:
        raise SnapshotError(f"{name}: missing columns {missing}")
    table = table.select(schema.names).cast(schema)
    if table.num_rows:
        table = table.sort_by([(k, "ascending") for k in SORT_KEYS[name]])
    return table


def write_snapshot(
    out_dir: Path | str,
    *,
    tables: dict[str, pa.Table],
    until_ns: int,
    source: dict[str, Any] | None = None,
    watch_grain_ns: int = 1,
) -> dict[str, Any]:
    """Write the four tables and a manifest atomically into ``out_dir``; return the manifest.

    ``watch_grain_ns``: the time bucket ``interactions`` rows were aggregated to (see above).
    """
    if watch_grain_ns < 1:
        raise SnapshotError(f"watch_grain_ns must be at least 1, got {watch_grain_ns}")
    out = Path(out_dir)
    if set(tables) != set(SCHEMAS):
        raise SnapshotError(f"expected tables {sorted(SCHEMAS)}, got {sorted(tables)}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        files: dict[str, str] = {}
        counts: dict[str, int] = {}
        lo: int | None = None
        hi: int | None = None
        for name in sorted(SCHEMAS):
            table = conform(name, tables[name])
            fname = f"{name}.parquet"
            pq.write_table(table, tmp / fname, compression="zstd", row_group_size=1 << 20)
            files[fname] = _sha256(tmp / fname)
            counts[name] = table.num_rows
            if name in TIME_COLUMNS and table.num_rows:
                a, b = TIME_COLUMNS[name]
                tmin = pc.min(table[a]).as_py()
                tmax = pc.max(table[b]).as_py()
                lo = tmin if lo is None else min(lo, tmin)
                hi = tmax if hi is None else max(hi, tmax)
        manifest: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "until_ns": until_ns,
            "watch_grain_ns": watch_grain_ns,
            "time_range": {"min_ns": lo, "max_ns": hi},
            "row_counts": counts,
            "files": files,
            "content_hash": hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest(),
            "source": source or {},
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        fsync_files(tmp)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
        fsync_dir(out.parent)
        return manifest
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def read_snapshot(path: Path | str, verify: bool = True) -> Snapshot:
    """Load a snapshot, checking every file's sha256 against the manifest when ``verify``."""
    p = Path(path)
    try:
        manifest = json.loads((p / MANIFEST).read_text())
    except FileNotFoundError as exc:
        raise SnapshotError(f"no {MANIFEST} in {p}") from exc
    if manifest.get("format_version") != FORMAT_VERSION:
        raise SnapshotError(
            f"unsupported snapshot format {manifest.get('format_version')!r} (want "
            f"{FORMAT_VERSION}): rebuild it with `marquee ingest snapshot`"
        )
    loaded: dict[str, pa.Table] = {}
    for name in SCHEMAS:
        fname = f"{name}.parquet"
        fpath = p / fname
        if verify and _sha256(fpath) != manifest["files"].get(fname):
            raise SnapshotError(f"{fname} does not match the manifest's sha256")
        loaded[name] = pq.read_table(fpath, schema=SCHEMAS[name])
    return Snapshot(path=p, manifest=manifest, **loaded)


def resolve_snapshot(root: Path | str, ref: str) -> Path:
    """The folder ``ref`` names, or for ``latest`` the one under ``root`` with the largest until."""
    if ref != "latest":
        return Path(ref)
    base = Path(root)
    found = []
    for d in base.iterdir() if base.is_dir() else []:
        m = d / MANIFEST
        if d.is_dir() and not d.name.startswith(".") and m.is_file():
            found.append((json.loads(m.read_text()).get("until_ns", 0), d.name, d))
    if not found:
        raise SnapshotError(f"no snapshots under {base}")
    return max(found)[2]
