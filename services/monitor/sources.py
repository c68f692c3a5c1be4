"""Where the monitor reads events: event stores (live) or files of stream lines (post-mortems).

Both give the evaluator the same thing: rows of one kind, in the store's schema, with
``since <= time_ns < until``.  Event time up to which the data is complete comes from the
stores' stream heads minus the allowed lateness.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from services.common.events import ExposureEvent, RateEvent, Rejected, WatchEvent, parse
from services.common.store import SCHEMAS, EventStoreReader

__all__ = ["LinesSource", "StoreSource"]


def _window(table: pa.Table, since: int | None, until: int | None) -> pa.Table:
    if since is None and until is None:
        return table
    t = table["time_ns"]
    mask = None
    if since is not None:
        mask = pc.greater_equal(t, since)
    if until is not None:
        hi = pc.less(t, until)
        mask = hi if mask is None else pc.and_(mask, hi)
    return table.filter(mask)


class StoreSource:
    """Reads through ``EventStoreReader`` from one or more stores (stream, exposures)."""

    def __init__(self, roots: Sequence[Path | str]) -> None:
        self.readers = [EventStoreReader(r) for r in dict.fromkeys(str(r) for r in roots)]

    def refresh(self) -> None:
        """See commits made since the last look."""
        for r in self.readers:
            r.refresh()

    def read(self, kind: str, columns: list[str], since: int | None, until: int | None) -> pa.Table:
        """Rows of ``kind`` from every store, with since <= time_ns < until."""
        parts = [
            r.read(kind, columns=columns, since_ns=since, until_ns=until) for r in self.readers
        ]
        parts = [p for p in parts if p.num_rows]
        if not parts:
            return SCHEMAS[kind].empty_table().select(columns)
        return pa.concat_tables(parts) if len(parts) > 1 else parts[0]

    def complete_until(self, lateness_ns: int) -> int | None:
        """Event time before which every store's data is in: the lowest head minus lateness."""
        heads = []
        for r in self.readers:
            h = r.heads()
            if not h:
                return None
            heads.append(min(h.values()))
        return min(heads) - lateness_ns if heads else None


class LinesSource:
    """Stream and exposure lines from files in the contract's format, read into memory."""

    def __init__(self, paths: Iterable[Path | str]) -> None:
        self._load(_file_lines(paths))

    @classmethod
    def from_lines(cls, lines: Iterable[str]) -> LinesSource:
        """A source over lines in memory (simulations, tests)."""
        self = cls.__new__(cls)
        self._load(lines)
        return self

    def _load(self, lines: Iterable[str]) -> None:
        watches: list[WatchEvent] = []
        rates: list[RateEvent] = []
        exposures: list[ExposureEvent] = []
        self.rejected = 0
        for line in lines:
            ev = parse(line)
            if isinstance(ev, WatchEvent):
                watches.append(ev)
            elif isinstance(ev, RateEvent):
                rates.append(ev)
            elif isinstance(ev, ExposureEvent):
                exposures.append(ev)
            elif isinstance(ev, Rejected):
                self.rejected += 1
        self.tables = {
            "watch": pa.table(
                {
                    "time_ns": pa.array([e.time_ns for e in watches], pa.int64()),
                    "user_id": pa.array([e.user_id for e in watches], pa.int64()),
                    "movie_id": pa.array([e.movie_id for e in watches], pa.string()),
                    "minute": pa.array([e.minute for e in watches], pa.int32()),
                }
            ),
            "rate": pa.table(
                {
                    "time_ns": pa.array([e.time_ns for e in rates], pa.int64()),
                    "user_id": pa.array([e.user_id for e in rates], pa.int64()),
                    "movie_id": pa.array([e.movie_id for e in rates], pa.string()),
                    "rating": pa.array([e.rating for e in rates], pa.int8()),
                }
            ),
            "exposure": exposure_table(exposures),
        }

        self.visible_until: int | None = None
        """Hide events at or after this time (replay "as of" a moment; tests move it)."""

    def read(self, kind: str, columns: list[str], since: int | None, until: int | None) -> pa.Table:
        """Rows of ``kind`` with since <= time_ns < until (and before ``visible_until``)."""
        if self.visible_until is not None:
            until = self.visible_until if until is None else min(until, self.visible_until)
        return _window(self.tables[kind], since, until).select(columns)

    def end_ns(self) -> int:
        """One past the latest event: with a finished file every window is in the data."""
        ends = [pc.max(t["time_ns"]).as_py() for t in self.tables.values() if t.num_rows]
        end = int(max(ends)) + 1 if ends else 0
        return end if self.visible_until is None else min(end, self.visible_until)

    def refresh(self) -> None:
        """Files do not change: nothing to do."""

    def complete_until(self, lateness_ns: int) -> int | None:
        """The end of the visible data minus the allowed lateness."""
        end = self.end_ns()
        return end - lateness_ns if end else None


def _file_lines(paths: Iterable[Path | str]) -> Iterable[str]:
    for path in paths:
        with open(path, encoding="utf-8", errors="replace") as fh:
            yield from fh


def exposure_table(events: Sequence[ExposureEvent]) -> pa.Table:
    """Exposure events as rows of the store's exposure columns (without partition/offset)."""
    schema = SCHEMAS["exposure"]
    return pa.table(
        {
            "time_ns": pa.array([e.time_ns for e in events], pa.int64()),
            "user_id": pa.array([e.user_id for e in events], pa.int64()),
            "experiment": pa.array([e.experiment for e in events], pa.string()),
            "arm": pa.array([e.arm for e in events], pa.string()),
            "status": pa.array([e.status for e in events], pa.int16()),
            "latency_ms": pa.array([e.latency_ms for e in events], pa.int32()),
            "fallback": pa.array([e.fallback for e in events], pa.string()),
            "items": pa.array([list(e.items) for e in events], schema.field("items").type),
            "item_arms": pa.array(
                [list(e.item_arms) if e.item_arms is not None else None for e in events],
                schema.field("item_arms").type,
            ),
        }
    )
