"""The stream: every line parses, per-user time order, one line per minute, determinism."""

from __future__ import annotations

import collections
import hashlib
from pathlib import Path

import pytest

from services.common.events import (
    CreateAccountEvent,
    RateEvent,
    RecommendationEvent,
    Rejected,
    WatchEvent,
    format_line,
    parse,
)
from services.simulator import cli
from tests.simulator.helpers import SMALL, run_lines


@pytest.fixture(scope="module")
def clean_run() -> tuple[list[str], object]:
    return run_lines(hours=4.0)


def test_every_line_parses_and_round_trips(clean_run: tuple[list[str], object]) -> None:
    lines, _ = clean_run
    kinds: collections.Counter[str] = collections.Counter()
    for line in lines:
        ev = parse(line)
        assert not isinstance(ev, Rejected), (line, ev)
        assert format_line(ev) == line  # produced exactly as the contract's formatter would
        kinds[ev.kind] += 1
    assert set(kinds) == {"watch", "rate", "create_account", "recommendation"}
    assert kinds["watch"] > 20 * kinds["rate"] > 0


def test_events_are_in_time_order_per_user_and_overall(clean_run: tuple[list[str], object]) -> None:
    lines, _ = clean_run
    events = [parse(x) for x in lines]
    times = [e.time_ns for e in events if not isinstance(e, Rejected)]
    assert times == sorted(times)
    last: dict[int, int] = {}
    for e in events:
        assert not isinstance(e, Rejected)
        assert e.time_ns >= last.get(e.user_id, 0)
        last[e.user_id] = e.time_ns


def test_watching_is_one_line_per_minute(clean_run: tuple[list[str], object]) -> None:
    lines, _ = clean_run
    prev: dict[int, WatchEvent] = {}
    steps = 0
    for e in map(parse, lines):
        if isinstance(e, WatchEvent):
            p = prev.get(e.user_id)
            if p is not None and p.movie_id == e.movie_id and e.minute == p.minute + 1:
                assert e.time_ns - p.time_ns == 60 * 10**9
                steps += 1
            prev[e.user_id] = e
    assert steps > 1_000


def test_ratings_recos_and_new_accounts_look_right(clean_run: tuple[list[str], object]) -> None:
    lines, _ = clean_run
    events = [parse(x) for x in lines]
    ratings = [e.rating for e in events if isinstance(e, RateEvent)]
    assert set(ratings) <= {1, 2, 3, 4, 5} and len(set(ratings)) >= 4
    assert 3.2 < sum(ratings) / len(ratings) < 3.9  # MovieLens-like mean
    recos = [e for e in events if isinstance(e, RecommendationEvent)]
    assert recos and all(e.status == 200 and len(e.result) == 20 for e in recos)
    assert {e.time_digits for e in recos} == {3, 6, 9}
    created = [e.user_id for e in events if isinstance(e, CreateAccountEvent)]
    assert created and min(created) > SMALL.n_users
    assert len(created) == len(set(created))
    first_seen: dict[int, object] = {}
    for e in events:
        first_seen.setdefault(e.user_id, e)
    assert all(isinstance(first_seen[u], CreateAccountEvent) for u in created)


def test_rates_match_the_configured_activity(clean_run: tuple[list[str], object]) -> None:
    _, engine = clean_run
    stats = engine.stats  # type: ignore[attr-defined]
    # 4,000 users x 1.2 sessions/day x 4 h; midnight to 4 am the daily rhythm averages ~1.1;
    # users still busy watching skip a session.
    expected = 4_000 * 1.2 * 4 / 24 * 1.1 + stats["new_accounts"]
    assert 0.7 * expected < stats["sessions"] < 1.1 * expected
    assert 10 <= stats["new_accounts"] <= 45  # 150 a day for 4 h = 25
    assert 0.25 < stats["reco_calls"] / stats["sessions"] < 0.35


def _backfill(tmp_path: Path, name: str, seed: int, *extra: str) -> bytes:
    out = tmp_path / name
    argv = [
        "backfill", "--days", "0.1", "--users", "3000", "--movies", "800", "--seed", str(seed),
        "--out", str(out), "--run-dir", str(tmp_path / f"run-{name}"),
        "--target", "builtin:random", *extra,
    ]  # fmt: skip
    assert cli.main(argv) == 0
    return out.read_bytes()


def test_backfill_is_byte_identical_for_the_same_seed(tmp_path: Path) -> None:
    flags = ("--malformed-rate", "0.01", "--duplicate-rate", "0.01", "--late-rate", "0.01")
    a = _backfill(tmp_path, "a", 5, *flags)
    b = _backfill(tmp_path, "b", 5, *flags)
    c = _backfill(tmp_path, "c", 6, *flags)
    assert len(a) > 100_000
    assert hashlib.sha256(a).digest() == hashlib.sha256(b).digest()
    assert a != c
    ia = (tmp_path / "run-a" / "truth" / "injected.jsonl").read_bytes()
    ib = (tmp_path / "run-b" / "truth" / "injected.jsonl").read_bytes()
    assert ia == ib and ia


def test_injections_leave_the_clean_stream_alone(tmp_path: Path) -> None:
    clean = _backfill(tmp_path, "clean", 9).decode().splitlines()
    dirty = _backfill(tmp_path, "dirty", 9, "--malformed-rate", "0.02", "--duplicate-rate", "0.01")
    rows = dirty.decode().splitlines()
    import json

    labelled = {
        json.loads(x)["index"]
        for x in (tmp_path / "run-dirty" / "truth" / "injected.jsonl").read_text().splitlines()
    }
    assert [r for i, r in enumerate(rows) if i not in labelled] == clean


def test_small_live_ticks_keep_time_order_and_warm_up_starts_mid_movie(small_world) -> None:  # type: ignore[no-untyped-def]
    from services.simulator.engine import NS, Engine, EngineConfig
    from services.simulator.recommenders import PopularityRecommender

    calls: list[int] = []

    class Counting(PopularityRecommender):
        def recommend(self, user_ids, t_ns):  # type: ignore[no-untyped-def]
            calls.append(len(user_ids))
            return super().recommend(user_ids, t_ns)

    cfg = EngineConfig(seed=2, tick_s=1.0, reco_share=0.5)
    engine = Engine(small_world, cfg, Counting(small_world))
    engine.warm_up(cfg.start_ns + 3 * 3600 * NS)
    assert calls == []  # nobody is asked during the silent warm-up
    lines = [x for b in engine.run(until_ns=engine.now_ns + 1800 * NS) for x in b.lines]
    events = [parse(x) for x in lines]
    assert not any(isinstance(e, Rejected) for e in events)
    times = [e.time_ns for e in events]  # type: ignore[union-attr]
    assert times == sorted(times) and times[0] >= cfg.start_ns + 3 * 3600 * NS
    first_minutes = [e.minute for e in events[:200] if isinstance(e, WatchEvent)]
    assert max(first_minutes) > 30  # the stream opens with sessions in progress
    assert sum(calls) > 0
