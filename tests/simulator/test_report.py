"""Judging a recommender online from stream lines: one report for live runs and saved streams."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from services.common import online
from services.common.events import RecommendationEvent, WatchEvent, parse
from services.simulator import cli
from services.simulator.report import OnlineTally
from tests.simulator.helpers import run_lines

HEAD = "2026-03-02T10:00:00.000,{},recommendation request h:8082, status {}, result: {}"
LINES = [
    HEAD.format(1, 200, "a+1999, b+2000, 5 ms"),
    HEAD.format(2, 200, "a+1999, 7 ms"),
    HEAD.format(3, 0, "java.net.ConnectException: Connection refused, 1 ms"),
    HEAD.format(
        4, 0, "java.util.concurrent.TimeoutException: Request timeout after 600 ms, 600 ms"
    ),
    HEAD.format(5, 503, "HTTP 503: no model loaded yet, 3 ms"),
    "2026-03-02T10:05:00,1,GET /data/m/b+2000/0.mpg",
    "2026-03-02T10:16:00,2,GET /data/m/a+1999/0.mpg",
    "2026-03-02T10:05:00,3,GET /data/m/a+1999/0.mpg",
    "not a line",
    "2026-03-02T10:30:00,9,GET /data/m/c+2001/0.mpg",
]


def test_report_counts_calls_errors_latency_and_the_contracts_watch_rate() -> None:
    tally = OnlineTally()
    tally.add(LINES)
    r = tally.report()
    assert r.requests == {"0": 2, "200": 2, "503": 1}
    assert r.errors == {"connection refused": 1, "timeout": 1, "HTTP 503": 1}
    assert r.latency_ms == {"p50": 5, "p95": 600, "p99": 600, "max": 600}
    # User 1 watched a listed movie 5 minutes later; user 2 only after 16 minutes.
    assert r.watch_rate == online.WatchRate(successes=1, trials=2, pending=0)
    assert (r.lines, r.rejected) == (len(LINES), 1)
    text = r.text()
    assert "15-minute watch rate: 0.500 (1 of 2 decided lists" in text
    assert "failed requests: 3 of 5" in text


def test_lists_still_in_their_window_are_pending_not_failures() -> None:
    tally = OnlineTally()
    tally.add([*LINES[:2], "2026-03-02T10:05:00,1,GET /data/m/b+2000/0.mpg"])
    r = tally.report()
    assert r.watch_rate == online.WatchRate(successes=0, trials=0, pending=2)
    assert "n/a" in r.text() and r.to_json()["watch_rate_15_min"] is None


def _tables(lines: list[str]) -> tuple[pa.Table, pa.Table]:
    events = [parse(x) for x in lines]
    recos = [e for e in events if isinstance(e, RecommendationEvent)]
    watches = [e for e in events if isinstance(e, WatchEvent)]
    lists = pa.table(
        {
            "user_id": pa.array([e.user_id for e in recos], pa.int64()),
            "time_ns": pa.array([e.time_ns for e in recos], pa.int64()),
            "status": pa.array([e.status for e in recos], pa.int64()),
            "result": pa.array([list(e.result) for e in recos], pa.list_(pa.string())),
        }
    )
    w = pa.table(
        {
            "user_id": pa.array([e.user_id for e in watches], pa.int64()),
            "movie_id": pa.array([e.movie_id for e in watches], pa.string()),
            "time_ns": pa.array([e.time_ns for e in watches], pa.int64()),
        }
    )
    return lists, w


def test_keeping_only_watches_that_can_count_changes_nothing() -> None:
    lines, _ = run_lines(hours=3.0, target="builtin:oracle", reco_share=0.5)
    tally = OnlineTally()
    for i in range(0, len(lines), 5_000):  # in chunks, as live batches and file reads come
        tally.add(lines[i : i + 5_000])
    lists, watches = _tables(lines)
    full = online.watch_rate(lists, watches)
    assert tally.report().watch_rate == full
    assert full.trials > 100 and full.successes > 0


def test_evaluate_prints_the_report_of_a_saved_stream(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stream = tmp_path / "s.log"
    assert cli.main(["backfill", "--days", "0.1", "--users", "2000", "--movies", "500",
                     "--target", "builtin:oracle", "--reco-share", "0.5", "--out", str(stream),
                     "--no-truth"]) == 0  # fmt: skip
    capsys.readouterr()
    assert cli.main(["evaluate", str(stream)]) == 0
    text = capsys.readouterr().out
    assert "recommendation requests:" in text and "latency ms: p50" in text
    assert "15-minute watch rate: 0." in text
    assert cli.main(["evaluate", str(stream), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    tally = OnlineTally()
    tally.add(stream.read_text().splitlines())
    assert doc == tally.report().to_json()
    assert doc["requests_by_status"] == {"200": doc["requests"]} and doc["requests"] > 50
    assert doc["watch_rate_decided_lists"] > 0


def test_evaluate_a_missing_file_is_one_line_and_exit_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["evaluate", str(tmp_path / "nope.log")]) == 3  # not found (cliutil)
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "nope.log" in err
