"""Training snapshots from the event store, written with ``services.common.snapshot``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from services.common.events import format_time, parse_time
from services.common.snapshot import write_snapshot
from services.common.store import STREAM_KINDS as KINDS  # not our exposures
from services.ingest import derived
from services.ingest.enrich import MetadataCache
from services.ingest.store import EventStore


def parse_until(text: str) -> int:
    """``--until`` as ns since the epoch: a stream time, a date, or an integer of nanoseconds."""
    t = text.strip()
    if t.isdigit() and len(t) > 10:
        return int(t)
    if len(t) == 10:
        t += "T00:00:00"
    parsed = parse_time(t)
    if parsed is None:
        raise ValueError(f"not a time: {text!r} (want e.g. 2026-03-02T14:00:00 or 2026-03-02)")
    return parsed[0]


def snapshot_tables(
    store: EventStore,
    until_ns: int,
    cache: MetadataCache | None = None,
    watch_grain_ns: int = derived.WATCH_GRAIN_NS,
) -> dict[str, Any]:
    """The four snapshot tables of every event with ``time_ns < until_ns``.

    Watches and ratings stay fine-grained in time (``watch_increments``, ``rating_events``) so
    the trainer can cut them at its own period boundaries, which a snapshot does not know.
    """
    return {
        "interactions": derived.watch_increments(store, until_ns=until_ns, grain_ns=watch_grain_ns),
        "ratings": derived.rating_events(store, until_ns=until_ns),
        "users": derived.users_table(derived.user_ids(store, until_ns=until_ns).to_pylist(), cache),
        "movies": derived.movies_table(
            derived.movie_ids(store, until_ns=until_ns).to_pylist(), cache
        ),
    }


def build_snapshot(
    store: EventStore,
    out_dir: Path | str,
    until_ns: int,
    cache: MetadataCache | None = None,
    watch_grain_ns: int = derived.WATCH_GRAIN_NS,
) -> dict[str, Any]:
    """Write the snapshot of everything before ``until_ns`` to ``out_dir``; return its manifest.

    The source section holds only what the inputs determine (no paths, no wall clock), so the
    same store and cache give the same bytes for the same ``until``.
    """
    tables = snapshot_tables(store, until_ns, cache, watch_grain_ns)
    events = {k: store.read(k, columns=["offset"], until_ns=until_ns).num_rows for k in KINDS}
    source = {
        "producer": "marquee-ingest",
        "until": format_time(until_ns, 9),
        "events": events,
        "enriched": cache is not None,
    }
    return write_snapshot(
        out_dir,
        tables=tables,
        until_ns=until_ns,
        source=source,
        watch_grain_ns=watch_grain_ns,
    )
