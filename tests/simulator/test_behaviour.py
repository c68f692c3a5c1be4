"""Users' behaviour: rarely rewatching what they finished, and the settings that shape it."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest

from services.common.events import WatchEvent, parse
from services.simulator.engine import NS, Behaviour, Engine, EngineConfig, WatchMemory
from services.simulator.recommenders import OracleRecommender
from services.simulator.runner import build_simulation
from services.simulator.settings import SimulatorSettings
from services.simulator.world import World, WorldConfig
from tests.simulator.helpers import session_starts

BUSY = WorldConfig(seed=7, n_users=500, n_movies=1_500, new_user_capacity=10)


def rewatch_share(behaviour: Behaviour, hours: float = 24) -> tuple[int, float]:
    """(sessions, share of sessions that play a movie the user played in an earlier session)."""
    world = World.build(BUSY)
    cfg = EngineConfig(
        seed=3,
        reco_share=0.0,
        sessions_per_user_day=8,  # busy users: many sessions each, so repeats would show
        new_accounts_per_day=0,
        behaviour=behaviour,
    )
    engine = Engine(world, cfg, None)
    played: defaultdict[int, set[str]] = defaultdict(set)
    sessions = repeats = 0
    batches = engine.run(until_ns=cfg.start_ns + int(hours * 3600 * NS))
    for ev in session_starts(line for batch in batches for line in batch.lines):
        sessions += 1
        repeats += ev.movie_id in played[ev.user_id]
        played[ev.user_id].add(ev.movie_id)
    return sessions, repeats / sessions


def test_users_rarely_rewatch_what_they_finished() -> None:
    sessions, share = rewatch_share(Behaviour())
    assert sessions > 2_000
    # Without the memory the same users replay a favourite in about one session of five.
    _, forgetful = rewatch_share(Behaviour(rewatch_memory=0))
    assert share < 0.04, share
    assert forgetful > 3 * share, (share, forgetful)


def test_a_list_of_finished_movies_is_rarely_picked(small_world: World) -> None:
    users = np.arange(1, 2_001, dtype=np.int64)
    oracle = OracleRecommender(small_world, seed=1)
    answers = oracle.recommend(users, 0)
    lists = np.array([a.movies for a in answers], np.int64)
    starts = np.zeros(len(users), np.int64)

    def accepted(remember: bool) -> int:
        engine = Engine(small_world, EngineConfig(seed=5), None)
        if remember:
            for col in range(lists.shape[1]):
                engine.memory.remember(users - 1, lists[:, col])
        _, ok, _ = engine._react(users, starts, answers, 0)
        return int(ok.sum())

    fresh, finished = accepted(False), accepted(True)
    assert fresh > 1_000
    assert finished < 0.1 * fresh, (fresh, finished)


def test_memory_keeps_the_most_recent_finished_movies() -> None:
    mem = WatchMemory(capacity=3, slots=2, n_movies=100)
    u = np.array([1], np.int64)
    for m in (10, 11, 12):
        mem.remember(u, np.array([m], np.int64))
    assert mem.finished(2) == [11, 12]
    assert mem.finished(1) == []
    hit = mem.contains(np.array([1, 0], np.int64), np.array([[10, 11, 12], [10, 11, 12]]))
    assert hit.tolist() == [[False, True, True], [False, False, False]]
    assert WatchMemory(3, 0, 100).contains(u, np.array([[1, 2]])).tolist() == [[False, False]]


def test_the_oracle_leaves_out_what_the_user_finished(small_world: World) -> None:
    engine = Engine(small_world, EngineConfig(seed=5), OracleRecommender(small_world))
    oracle = engine.recommender
    assert isinstance(oracle, OracleRecommender)
    users = np.array([5, 6], np.int64)
    before = [a.movies for a in oracle.recommend(users, 0)]
    engine.memory.remember(np.array([4], np.int64), np.array([before[0][0]], np.int64))
    after = [a.movies for a in oracle.recommend(users, 0)]
    assert before[0][0] not in after[0]
    assert after[0][:19] == before[0][1:]
    assert after[1] == before[1]


def test_behaviour_settings_reach_the_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MARQUEE_SIM_REWATCH_PENALTY", "1.5")
    monkeypatch.setenv("MARQUEE_SIM_REWATCH_MEMORY", "8")
    monkeypatch.setenv("MARQUEE_SIM_ACCEPT_BIAS", "-3")
    settings = SimulatorSettings(n_users=50, n_movies=100, new_user_capacity=5)
    engine = build_simulation(settings).engine
    assert engine.behaviour.rewatch_penalty == 1.5
    assert engine.behaviour.accept_bias == -3.0
    assert engine.memory.movies.shape == (55, 8)
    monkeypatch.setenv("MARQUEE_SIM_REWATCH_PENALTY", "-1")
    with pytest.raises(ValueError, match="rewatch_penalty"):
        SimulatorSettings()


def test_step_arrays_gives_the_events_step_formats(small_world: World) -> None:
    def engine() -> Engine:
        rec = OracleRecommender(small_world, seed=3)
        return Engine(small_world, EngineConfig(seed=9, reco_share=0.5), rec)

    as_lines, as_arrays = engine(), engine()
    lines: list[str] = []
    watches = recos = 0
    for _ in range(90):
        lines.extend(as_lines.step().lines)
        ev = as_arrays.step_arrays()
        watches += int((ev.kind == 0).sum())
        recos += len(ev.recos)
        assert len(ev.recos) == int((ev.kind == 3).sum())
    parsed = [parse(line) for line in lines]
    assert watches == sum(isinstance(e, WatchEvent) for e in parsed) > 0
    assert recos == sum("recommendation request" in line for line in lines) > 0
