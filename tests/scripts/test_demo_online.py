"""The demo reports the watch rate by the one shared definition, read from a real store."""

from __future__ import annotations

from collections import namedtuple
from pathlib import Path

from scripts.demo import online_summary
from services.common.events import parse_time
from services.ingest.core import Ingestor
from services.ingest.store import EventStore

Rec = namedtuple("Rec", "offset value timestamp")
RECO = "recommendation request h:8082, status {}, result: {}, {} ms"


def test_online_summary_counts_successes_and_pending_lists(tmp_path: Path) -> None:
    values = [
        f"2026-03-02T10:00:00.000,1,{RECO.format(200, 'a+1999, b+2000', 20)}",
        f"2026-03-02T10:00:00.000,2,{RECO.format(200, 'a+1999', 30)}",
        f"2026-03-02T10:00:00.000,3,{RECO.format(0, 'java.net.ConnectException: refused', 1)}",
        "2026-03-02T10:00:00.000,1,GET /data/m/b+2000/0.mpg",  # same instant: not after it
        "2026-03-02T10:05:00,1,GET /data/m/b+2000/1.mpg",  # success for user 1
        "2026-03-02T10:14:00,4,GET /create_account",
        f"2026-03-02T10:14:00,4,{RECO.format(200, 'c+2001', 40)}",  # still open at the end
        "2026-03-02T10:16:00,2,GET /data/m/c+2001/0.mpg",  # user 2 watched another movie
    ]
    ing = Ingestor(EventStore(tmp_path, writer=True))
    ing.add(0, [Rec(i, v.encode(), 1_796_083_200_000) for i, v in enumerate(values)])
    ing.flush()
    ing.store.close()
    since = parse_time("2026-03-02T09:59:00")
    assert since is not None
    out = online_summary(tmp_path, since[0])
    assert out["recommendation_requests"] == 4
    assert out["by_status"] == {"200": 3, "0": 1}
    assert out["watched_within_15_min"] == 1
    assert (out["lists_decided"], out["lists_pending"]) == (2, 1)
    assert out["watch_rate_15_min"] == 0.5
    assert out["watch_rate_15_min_mean_per_user"] == 0.5
