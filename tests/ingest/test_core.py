"""The plain core and the store: segments, quarantine, exactly-once replays, recovery."""

from __future__ import annotations

import json
from collections import namedtuple
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from services.common.events import format_line, parse
from services.ingest.core import Ingestor, request_shape
from services.ingest.store import COMMITS_DIR, META_OFFSETS, EventStore, StoreError
from tests.ingest.streamgen import MALFORMED, lines

Rec = namedtuple("Rec", "offset value timestamp")
KAFKA_MS = 1_772_409_600_000  # 2026-03-02


def recs(values: list[bytes], start: int = 0) -> list[Rec]:
    return [Rec(start + i, v, KAFKA_MS) for i, v in enumerate(values)]


def stored_lines(path: Path) -> list[str]:
    return sorted(format_line(e) for _, _, e in EventStore(path).iter_events())


def test_valid_lines_round_trip_through_segments(tmp_path: Path) -> None:
    values = lines(5_000, seed=1)
    ing = Ingestor(EventStore(tmp_path, writer=True))
    assert ing.add(0, recs([v.encode() for v in values])) == 5_000
    commit = ing.flush()
    assert commit is not None and commit.offsets == {0: (0, 4_999)}
    assert stored_lines(tmp_path) == sorted(values)
    assert ing.flush() is None  # nothing buffered: no empty commit


def test_layout_is_by_type_and_date_with_offsets_in_metadata(tmp_path: Path) -> None:
    ing = Ingestor(EventStore(tmp_path, writer=True))
    ing.add(
        2,
        recs(
            [
                b"2026-03-02T23:59:59,1,GET /create_account",
                b"2026-03-03T00:00:01,2,GET /create_account",
            ],
            40,
        ),
    )
    ing.flush()
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.parquet"))
    assert files == [
        "events/create_account/date=2026-03-02/c0000000001.parquet",
        "events/create_account/date=2026-03-03/c0000000001.parquet",
    ]
    meta = pq.read_schema(tmp_path / files[1]).metadata
    assert json.loads(meta[META_OFFSETS]) == {"2": [41, 41]}
    manifest = json.loads((tmp_path / COMMITS_DIR / "c0000000001.json").read_text())
    assert manifest["offsets"] == {"2": [40, 41]}


@pytest.mark.parametrize(("raw", "reason"), MALFORMED, ids=[r for _, r in MALFORMED])
def test_every_malformed_line_is_quarantined_with_its_reason(
    tmp_path: Path, raw: bytes, reason: str
) -> None:
    letters = []
    ing = Ingestor(EventStore(tmp_path, writer=True), dead_letters=letters.extend)
    head = b"2026-03-10T10:00:00,7,GET /create_account"
    ing.add(1, recs([head, raw], 100))
    ing.flush()
    q = EventStore(tmp_path).read("quarantine").to_pylist()
    assert [(r["reason"], r["offset"], r["partition"], r["raw"]) for r in q] == [
        (reason, 101, 1, raw)
    ]
    assert q[0]["kafka_time_ms"] == KAFKA_MS and q[0]["detail"]
    assert [(d.reason, d.offset, d.raw) for d in letters] == [(reason, 101, raw)]
    assert EventStore(tmp_path).counts()["create_account"] == 1


def test_replayed_offsets_are_skipped_in_the_buffer_and_after_restart(tmp_path: Path) -> None:
    values = [v.encode() for v in lines(3_000, seed=2)]
    ing = Ingestor(EventStore(tmp_path, writer=True))
    ing.add(0, recs(values[:2_000]))
    ing.add(0, recs(values[1_000:2_500], 1_000))  # a rebalance replays part of the buffer
    ing.flush()
    ing.store.close()
    again = Ingestor(EventStore(tmp_path, writer=True))
    assert again.next_offset(0) == 2_500
    assert again.add(0, recs(values)) == 500  # the whole partition replayed after a crash
    again.flush()
    assert stored_lines(tmp_path) == sorted(v.decode() for v in values)


def test_files_of_an_uncommitted_flush_are_removed_on_open(tmp_path: Path) -> None:
    values = [v.encode() for v in lines(1_000, seed=3)]
    ing = Ingestor(EventStore(tmp_path, writer=True))
    ing.add(0, recs(values[:500]))
    ing.flush()
    ing.add(0, recs(values[500:], 500))
    ing.flush()
    ing.store.close()
    # Crash after the segment files of commit 2 were renamed, before its manifest landed.
    (tmp_path / COMMITS_DIR / "c0000000002.json").unlink()
    (tmp_path / COMMITS_DIR / ".tmp-c0000000003.json").write_text("{")
    store = EventStore(tmp_path, writer=True)
    assert store.next_offsets() == {0: 500}
    assert not list(tmp_path.rglob("c0000000002.parquet"))
    assert not list(tmp_path.rglob(".tmp-*"))
    again = Ingestor(store)
    again.add(0, recs(values))
    again.flush()
    assert stored_lines(tmp_path) == sorted(v.decode() for v in values)


def test_a_failed_dead_letter_delivery_keeps_the_batch_for_a_retry(tmp_path: Path) -> None:
    calls = []

    def flaky(letters: list) -> None:
        calls.append(len(letters))
        if len(calls) == 1:
            raise ConnectionError("broker down")

    ing = Ingestor(EventStore(tmp_path, writer=True), dead_letters=flaky)
    ing.add(0, recs([b"2026-03-02T10:00:00,1,GET /create_account", b"garbage"]))
    with pytest.raises(ConnectionError):
        ing.flush()
    assert ing.store.next_offsets() == {} and ing.buffered == 2
    assert ing.flush() is not None
    assert calls == [1, 1]
    assert ing.store.counts() == {"create_account": 1, "quarantine": 1}


def test_one_writer_per_store(tmp_path: Path) -> None:
    EventStore(tmp_path, writer=True)
    with pytest.raises(StoreError):
        EventStore(tmp_path, writer=True)
    EventStore(tmp_path)  # readers are always welcome


def test_time_checks_survive_a_restart(tmp_path: Path) -> None:
    ing = Ingestor(EventStore(tmp_path, writer=True), late_window_s=60, max_lateness_s=3_600)
    ing.add(0, recs([b"2026-03-02T12:00:00,1,GET /create_account"]))
    ing.flush()
    ing.store.close()
    again = Ingestor(EventStore(tmp_path, writer=True), late_window_s=60, max_lateness_s=3_600)
    again.add(
        0,
        recs(
            [
                b"2026-03-02T11:30:00,2,GET /create_account",  # late, within max lateness: stored
                b"2026-03-02T10:00:00,3,GET /create_account",  # beyond max lateness
                b"2026-03-05T12:00:00,4,GET /create_account",  # two days ahead of the head
                b"2026-03-02T12:00:30,5,GET /create_account",
            ],
            1,
        ),
    )
    assert again._buf.late == 1
    again.flush()
    store = EventStore(tmp_path)
    assert sorted(store.read("create_account")["user_id"].to_pylist()) == [1, 2, 5]
    assert store.read("quarantine")["reason"].to_pylist() == ["too_late", "time_in_future"]
    assert store.heads() == {0: parse("2026-03-02T12:00:30,5,GET /create_account").time_ns}


def test_a_stream_resuming_after_a_pause_is_not_in_the_future(tmp_path: Path) -> None:
    """Event times far ahead of the head are fine when Kafka received them just as late."""
    ing = Ingestor(EventStore(tmp_path, writer=True))
    ing.add(0, recs([b"2026-03-02T12:00:00,1,GET /create_account"]))
    nine_months_ms = 273 * 86_400_000
    resumed = [
        Rec(1, b"2026-11-30T12:00:00,2,GET /create_account", KAFKA_MS + nine_months_ms),
        Rec(2, b"2026-11-30T12:00:01,3,GET /create_account", KAFKA_MS + nine_months_ms),
        Rec(3, b"2099-01-01T00:00:00,4,GET /create_account", KAFKA_MS + nine_months_ms),
    ]
    ing.add(0, resumed)
    ing.flush()
    store = EventStore(tmp_path)
    assert sorted(store.read("create_account")["user_id"].to_pylist()) == [1, 2, 3]
    assert store.read("quarantine")["reason"].to_pylist() == ["time_in_future"]


def test_flush_triggers_by_count_bytes_and_age(tmp_path: Path) -> None:
    now = [0.0]
    ing = Ingestor(
        EventStore(tmp_path, writer=True),
        flush_max_events=3,
        flush_max_bytes=200,
        flush_interval_s=5,
        clock=lambda: now[0],
    )
    line = b"2026-03-02T10:00:00,1,GET /create_account"
    assert not ing.should_flush()
    ing.add(0, recs([line]))
    assert not ing.should_flush()
    now[0] = 5.0
    assert ing.should_flush()
    ing.flush()
    ing.add(0, recs([line] * 3, 1))
    assert ing.should_flush()
    ing.flush()
    ing.add(0, recs([line + b"x" * 300], 4))
    assert ing.should_flush()


def test_request_shape_masks_values() -> None:
    assert request_shape("2026-03-02T10:00:00,12,GET /search?q=42") == "GET /search"
    assert request_shape("2026-03-02T10:00:00,12,GET /data/x/the+thing+1999/7.mpg") == "GET /data/x"
    assert request_shape("2026-03-02T10:00:00,12,POST /rate/a+1999=4") == "POST /rate/a+N=N"
    assert request_shape("t,1,search 42 things") == "search N things"


def test_a_failure_after_the_commit_does_not_store_the_batch_twice(tmp_path: Path) -> None:
    def broken_hook(tables: dict) -> None:
        raise RuntimeError("enricher exploded")

    ing = Ingestor(EventStore(tmp_path, writer=True), on_commit=broken_hook)
    ing.add(0, recs([b"2026-03-02T10:00:00,1,GET /create_account"]))
    assert ing.flush() is not None
    assert ing.flush() is None and ing.buffered == 0
    assert ing.store.counts() == {"create_account": 1}


def test_compaction_merges_files_and_changes_nothing_a_reader_sees(tmp_path: Path) -> None:
    from services.ingest.snapshots import build_snapshot, parse_until

    values = [v.encode() for v in lines(4_000, seed=9)] + [m for m, _ in MALFORMED[:5]]
    ing = Ingestor(EventStore(tmp_path / "s", writer=True))
    for i in range(0, len(values), 500):
        ing.add(i % 2, recs(values[i : i + 500], i))
        ing.flush()
    store = ing.store
    reader = EventStore(tmp_path / "s")
    before = stored_lines(tmp_path / "s")
    until = parse_until("2026-03-03")
    m1 = build_snapshot(EventStore(tmp_path / "s"), tmp_path / "snap1", until)
    n_files = len(list((tmp_path / "s").rglob("*.parquet")))
    offsets = store.next_offsets()
    assert store.compact() > 0
    assert len(list((tmp_path / "s").rglob("*.parquet"))) == 5  # 4 event types + quarantine
    assert n_files > 5
    assert store.next_offsets() == offsets
    assert stored_lines(tmp_path / "s") == before
    assert (
        reader.counts() != {}
        and reader.read("watch").num_rows == EventStore(tmp_path / "s").counts()["watch"]
    )
    m2 = build_snapshot(EventStore(tmp_path / "s"), tmp_path / "snap2", until)
    assert m1 == m2
    # Writing goes on after a compaction; a restart sees the same store.
    ing.add(0, recs([b"2026-03-02T23:00:00,9,GET /create_account"], 10_000))
    ing.flush()
    store.close()
    again = EventStore(tmp_path / "s", writer=True)
    assert again.counts() == EventStore(tmp_path / "s").counts()
    assert stored_lines(tmp_path / "s") == sorted(
        [*before, "2026-03-02T23:00:00,9,GET /create_account"]
    )


def test_a_crash_inside_compaction_loses_and_doubles_nothing(tmp_path: Path) -> None:
    values = [v.encode() for v in lines(2_000, seed=10)]
    ing = Ingestor(EventStore(tmp_path, writer=True))
    for i in range(0, len(values), 400):
        ing.add(0, recs(values[i : i + 400], i))
        ing.flush()
    before = stored_lines(tmp_path)
    old = sorted(tmp_path.rglob("*.parquet"))
    keep = {p: p.read_bytes() for p in old}
    ing.store.compact()
    ing.store.close()
    # Crash after the compaction manifest, before the old files were deleted: put them back.
    for p, data in keep.items():
        p.write_bytes(data)
    store = EventStore(tmp_path, writer=True)
    assert stored_lines(tmp_path) == before
    assert not any(p.exists() for p in old)  # the replaced files were cleaned up on open
    # Crash before the compaction manifest: the merged file is an orphan and goes away.
    store.close()
    last = sorted((tmp_path / COMMITS_DIR).glob("c*.json"))[-1]
    merged = json.loads(last.read_text())["files"]
    last.unlink()
    for p, data in keep.items():
        p.write_bytes(data)
    EventStore(tmp_path, writer=True).close()
    assert stored_lines(tmp_path) == before
    assert not any((tmp_path / f["path"]).exists() for f in merged)
