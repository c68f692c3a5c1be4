"""The plain core and the store: segments, quarantine, exactly-once replays, recovery."""

from __future__ import annotations

import datetime as dt
import json
from collections import namedtuple
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from services.common.events import format_line, parse_time
from services.ingest.core import Ingestor, request_shape
from services.ingest.store import COMMITS_DIR, META_OFFSETS, EventStore, StoreError
from tests.ingest.streamgen import MALFORMED, lines

Rec = namedtuple("Rec", "offset value timestamp")
KAFKA_MS = 1_796_083_200_000  # 2026-12-01: the lines went into Kafka after their own time


def recs(values: list[bytes], start: int = 0) -> list[Rec]:
    return [Rec(start + i, v, KAFKA_MS) for i, v in enumerate(values)]


def stored_lines(path: Path) -> list[str]:
    return sorted(format_line(e) for _, _, e in EventStore(path).iter_events())


def test_valid_lines_round_trip_through_segments(tmp_path: Path) -> None:
    values = lines(5_000, seed=1)
    ing = Ingestor(EventStore(tmp_path, writer=True))
    assert ing.add(0, recs([v.encode() for v in values])) == 5_000
    commit = ing.flush()
    assert commit is not None and commit.offsets == {("movielog", 0): (0, 4_999)}
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
    assert json.loads(meta[META_OFFSETS]) == {"movielog": {"2": [41, 41]}}
    manifest = json.loads((tmp_path / COMMITS_DIR / "c0000000001.json").read_text())
    assert manifest["offsets"] == {"movielog": {"2": [40, 41]}}


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
    assert store.next_offsets() == {("movielog", 0): 500}
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


# --- stream time ---------------------------------------------------------------------------
# Lines as (event time, Kafka record time): "live" lines entered Kafka at their own time,
# "backfill" lines (history produced now) entered Kafka months after it.

LIVE, BACKFILL = "live", "backfill"
DAY_MS = 86_400_000


def ms(text: str) -> int:
    """The record time (ms) of a line produced at zone-less ``text``."""
    t = parse_time(text)
    assert t is not None
    return t[0] // 1_000_000


def ns(text: str) -> int:
    return ms(text) * 1_000_000


def at(start: str, seconds: float) -> str:
    """``start`` plus ``seconds``, as a stream time."""
    t = dt.datetime.fromisoformat(start) + dt.timedelta(seconds=seconds)
    return t.isoformat(timespec="seconds")


def line(time: str, user: int) -> bytes:
    return f"{time},{user},GET /create_account".encode()


class Stream:
    """Builds one partition's records: consecutive offsets, users numbered from 1."""

    def __init__(self) -> None:
        self.recs: list[Rec] = []

    def add(self, time: str, record_ms: int | None = None, mode: str = LIVE) -> int:
        """Append a line stamped ``time``; return its user id (= offset + 1)."""
        if record_ms is None:
            record_ms = ms(time) if mode == LIVE else KAFKA_MS
        user = len(self.recs) + 1
        self.recs.append(Rec(len(self.recs), line(time, user), record_ms))
        return user

    def normal(self, n: int, start: str, mode: str = LIVE, step_s: float = 1) -> list[int]:
        return [self.add(at(start, i * step_s), mode=mode) for i in range(n)]


def run(path: Path, recs: list[Rec], batch: int = 7) -> tuple[Ingestor, list[int], list]:
    """Ingest ``recs`` in small batches; return the ingestor, stored users, quarantine."""
    ing = Ingestor(EventStore(path, writer=True))
    for i in range(0, len(recs), batch):
        ing.add(0, recs[i : i + batch])
    ing.flush()
    store = EventStore(path)
    users = sorted(store.read("create_account")["user_id"].to_pylist())
    q = store.read("quarantine", columns=["offset", "reason", "detail"]).to_pylist()
    return ing, users, sorted((r["offset"] + 1, r["reason"], r["detail"]) for r in q)


@pytest.mark.parametrize(
    ("bad", "record", "mode", "reason"),
    [
        ("2099-01-01T00:00:00", "2026-03-02T10:00:00", LIVE, "time_in_future"),
        ("2026-03-05T10:00:00", "2026-03-02T10:00:00", LIVE, "time_in_future"),  # 3 days ahead
        ("2026-06-01T00:00:00", None, BACKFILL, "time_in_future"),  # months before Kafka saw it
        ("2026-01-01T00:00:00", "2026-03-02T10:00:00", LIVE, "too_late"),
        ("1999-03-02T10:00:00", None, BACKFILL, "too_late"),
    ],
    ids=["live-2099", "live-3-days", "backfill-months", "live-past", "backfill-past"],
)
def test_a_bad_first_line_is_quarantined_and_changes_nothing_else(
    tmp_path: Path, bad: str, record: str | None, mode: str, reason: str
) -> None:
    """The first line of a partition gets the same care as the rest: it cannot set the time."""
    s = Stream()
    s.add(bad, ms(record) if record else KAFKA_MS)
    good = s.normal(40, "2026-03-02T10:00:00", mode)
    ing, users, q = run(tmp_path / "bad", s.recs)
    assert users == good
    assert [(u, r) for u, r, _ in q] == [(1, reason)]
    # Nothing else changes: the same stream without the bad line ends at the same stream time.
    clean = Stream()
    clean.normal(40, "2026-03-02T10:00:00", mode)
    ref, ref_users, ref_q = run(tmp_path / "clean", clean.recs)
    assert ref_q == [] and len(ref_users) == len(users)
    assert ing.stream_time(0) == ref.stream_time(0)
    assert ing._buf.late == 0


@pytest.mark.parametrize("mode", [LIVE, BACKFILL])
def test_a_burst_of_future_lines_in_the_middle_moves_nothing(tmp_path: Path, mode: str) -> None:
    s = Stream()
    good = s.normal(40, "2026-03-02T10:00:00", mode)
    # The burst entered Kafka with the stream around it.
    kafka_ms = ms("2026-03-02T10:01:00") if mode == LIVE else KAFKA_MS
    # Far ahead: of the record time (live), or of stream time by a month, which the record time
    # does not vouch for (backfill).
    far = [
        s.add(at("2026-03-02T10:01:00", d * 86_400 + i), kafka_ms)
        for i, d in enumerate([2, 30, 30, 40, 365])
    ]
    # Creeping, each line 20 h after the one before: a backfilled line within the tolerance of
    # the newest ones is plausible and stored, but the burst is shorter than the quorum, so
    # stream time stays where the stream is.  Live, all but the first are ahead of Kafka.
    creep = [s.add(at("2026-03-02T10:01:00", (i + 1) * 20 * 3_600), kafka_ms) for i in range(15)]
    good += s.normal(40, "2026-03-02T10:01:00", mode)
    ing, users, q = run(tmp_path, s.recs)
    if mode == LIVE:
        far += creep[1:]
        good += creep[:1]
    else:
        good += creep
    assert users == sorted(good)
    assert [(u, r) for u, r, _ in q] == [(u, "time_in_future") for u in sorted(far)]
    assert ns("2026-03-02T10:01:00") <= ing.stream_time(0) <= ns("2026-03-02T10:01:40")


def test_a_live_line_in_the_middle_of_a_backfill_does_not_move_stream_time(tmp_path: Path) -> None:
    """A line stamped near its record time is vouched for, and stored, but one is no quorum."""
    s = Stream()
    good = s.normal(40, "2026-03-02T10:00:00", BACKFILL)
    good += [s.add("2026-11-30T23:59:00", mode=LIVE)]
    good += s.normal(40, "2026-03-02T10:01:00", BACKFILL)
    ing, users, q = run(tmp_path, s.recs)
    assert users == good and q == []
    assert ing.stream_time(0) <= ns("2026-03-02T10:01:40")


def test_a_stream_resumed_after_a_long_pause_is_stored(tmp_path: Path) -> None:
    """Months without lines, ingest restarted in between: the resumed stream is all stored."""
    s = Stream()
    before = s.normal(40, "2026-03-02T10:00:00", LIVE)
    ing, _, _ = run(tmp_path, s.recs)
    march = ing.stream_time(0)
    assert march is not None and ns("2026-03-02T10:00:00") < march <= ns("2026-03-02T10:00:40")
    ing.store.close()
    again = Ingestor(EventStore(tmp_path, writer=True))
    assert again.stream_time(0) == march
    resumed = Stream()
    resumed.recs = list(s.recs)
    after = [resumed.add(at("2026-11-30T12:00:00", i), mode=LIVE) for i in range(3)]
    again.add(0, resumed.recs[40:])
    assert again.stream_time(0) == march  # three lines are no quorum
    after += resumed.normal(40, "2026-11-30T12:00:03", LIVE)
    # Late lines after the resume are judged against the new stream time.
    stale = resumed.add("2026-03-02T10:00:41", ms("2026-11-30T12:01:00"))
    future = resumed.add("2099-01-01T00:00:00", ms("2026-11-30T12:01:00"))
    again.add(0, resumed.recs[43:])
    assert ns("2026-11-30T12:00:00") <= again.stream_time(0) <= ns("2026-11-30T12:00:43")
    again.flush()
    store = EventStore(tmp_path)
    assert sorted(store.read("create_account")["user_id"].to_pylist()) == before + after
    q = store.read("quarantine").to_pylist()
    assert [(r["offset"] + 1, r["reason"]) for r in q] == [
        (stale, "too_late"),
        (future, "time_in_future"),
    ]
    assert store.heads() == {("movielog", 0): again.stream_time(0)}


@pytest.mark.parametrize("skew_h", [-6, 6, 20])
def test_a_producer_clock_skewed_within_the_tolerance_is_harmless(
    tmp_path: Path, skew_h: int
) -> None:
    """Record times (the producer's CreateTime) off by hours: every line is stored."""
    s = Stream()
    start = "2026-03-02T10:00:00"
    good = [s.add(at(start, i), ms(at(start, i)) + skew_h * 3_600_000) for i in range(40)]
    _, users, q = run(tmp_path, s.recs)
    assert users == good and q == []


def test_a_producer_clock_skewed_beyond_the_tolerance_is_quarantined_until_fixed(
    tmp_path: Path,
) -> None:
    """Beyond the tolerance a line cannot be told from a future one: quarantined, loudly, and
    stream time stays put, so the lines after the clock is fixed are stored as before."""
    s = Stream()
    good = s.normal(40, "2026-03-02T10:00:00", LIVE)
    slow = [
        s.add(at("2026-03-02T10:01:00", i), ms("2026-03-02T10:01:00") - 2 * DAY_MS)
        for i in range(20)
    ]
    good += s.normal(40, "2026-03-02T10:02:00", LIVE)
    ing, users, q = run(tmp_path, s.recs)
    assert users == good
    assert [(u, r) for u, r, _ in q] == [(u, "time_in_future") for u in slow]
    assert all("ahead of its Kafka record time" in d for _, _, d in q)
    assert ns("2026-03-02T10:02:00") <= ing.stream_time(0) <= ns("2026-03-02T10:02:40")


def test_time_checks_survive_a_restart(tmp_path: Path) -> None:
    s = Stream()
    s.normal(20, "2026-03-02T11:59:40", BACKFILL)
    ing = Ingestor(EventStore(tmp_path, writer=True), late_window_s=60, max_lateness_s=3_600)
    ing.add(0, s.recs)
    ing.flush()
    ing.store.close()
    head = ing.stream_time(0)
    assert head is not None and ns("2026-03-02T11:59:40") <= head <= ns("2026-03-02T12:00:00")
    again = Ingestor(EventStore(tmp_path, writer=True), late_window_s=60, max_lateness_s=3_600)
    assert again.stream_time(0) == head
    late = s.add("2026-03-02T11:30:00", mode=BACKFILL)  # late, within max lateness: stored
    stale = s.add("2026-03-02T10:00:00", mode=BACKFILL)  # beyond max lateness
    future = s.add("2026-03-05T12:00:00", mode=BACKFILL)  # two days ahead of stream time
    ok = s.add("2026-03-02T12:00:30", mode=BACKFILL)
    again.add(0, s.recs[20:])
    assert again._buf.late == 1
    again.flush()
    store = EventStore(tmp_path)
    users = store.read("create_account")["user_id"].to_pylist()
    assert late in users and ok in users and len(users) == 22
    q = store.read("quarantine").to_pylist()
    assert [(r["offset"] + 1, r["reason"]) for r in q] == [
        (stale, "too_late"),
        (future, "time_in_future"),
    ]
    assert store.heads() == {
        ("movielog", 0): head
    }  # two accepted lines are no quorum: stream time stays


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
