"""A run goes on from where a backfill ended: its accounts open, its users remembering."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from services.common.events import parse
from services.simulator import cli
from services.simulator.engine import NS, STATE_FILE, Engine, EngineConfig, saved_end_ns
from services.simulator.evaluation import simulate_lines
from services.simulator.recommenders import OracleRecommender
from services.simulator.world import World, WorldConfig
from tests.simulator.helpers import SMALL, session_starts

WORLD = ["--seed", "3", "--users", "1000", "--movies", "300"]


def _backfilled(hours: float, path: Path, new_accounts: float = 150) -> Engine:
    """``hours`` of the small world, its state saved to ``path``."""
    engine = Engine(
        World.build(SMALL), EngineConfig(seed=7, reco_share=0.0, new_accounts_per_day=new_accounts)
    )
    for _ in engine.run(until_ns=engine.cfg.start_ns + int(hours * 3600 * NS)):
        pass
    engine.save_state(path)
    return engine


def _finished_watches(lines: list[str], memory: np.ndarray, index: dict[str, int]) -> float:
    """Share of watch sessions in ``lines`` that replay a movie ``memory`` says was finished."""
    sessions = replays = 0
    for ev in session_starts(lines):
        sessions += 1
        replays += index[ev.movie_id] in memory[ev.user_id - 1]
    assert sessions > 500, sessions
    return replays / sessions


def test_a_resumed_engine_has_the_accounts_and_memories_of_the_saved_run(tmp_path: Path) -> None:
    path = tmp_path / STATE_FILE
    before = _backfilled(24, path)
    assert before.n_active > SMALL.n_users, "a day of new accounts must have opened some"
    resumed = Engine(World.build(SMALL), EngineConfig(seed=9))
    oracle = OracleRecommender(resumed.world, seed=1)
    oracle.memory = resumed.memory
    resumed.resume(path)
    assert resumed.n_active == before.n_active
    assert saved_end_ns(path) == before.now_ns
    users = [u for u in range(1, before.n_active + 1) if before.memory.finished(u)]
    assert len(users) > 500
    for u in users[:200]:
        assert resumed.memory.finished(u) == before.memory.finished(u)
    # the oracle sees the resumed memory (loaded in place): it leaves the finished movies out
    answers = oracle.recommend(np.array(users[:200], np.int64), resumed.now_ns)
    for u, a in zip(users[:200], answers, strict=True):
        assert a.movies and not set(before.memory.finished(u)) & set(a.movies)


def test_users_who_go_on_rarely_rewatch_what_they_finished_in_the_backfill(
    tmp_path: Path,
) -> None:
    path = tmp_path / STATE_FILE
    before = _backfilled(48, path)
    memory = before.memory.movies.copy()
    index = before.world.catalog.index
    cfg = WorldConfig(**{**SMALL.__dict__})
    on = simulate_lines(cfg, "builtin:popularity", 6, 7, 0.3, new_accounts_per_day=150, resume=path)
    times = [parse(x).time_ns for x in on[:50]]
    assert min(times) >= before.now_ns, "a resumed truth run starts where the backfill ended"
    forgetful = simulate_lines(cfg, "builtin:popularity", 6, 7, 0.3, new_accounts_per_day=150)
    resumed_share = _finished_watches(on, memory, index)
    forgetful_share = _finished_watches(forgetful, memory, index)
    # Users who forgot their history replay favourites they had finished; users who remember
    # them seldom do (the memory's penalty), so a model that leaves history out is not punished.
    assert resumed_share < 0.02, resumed_share
    assert forgetful_share > 3 * resumed_share, (resumed_share, forgetful_share)


def test_a_state_of_another_world_is_refused_with_the_reason(tmp_path: Path) -> None:
    path = tmp_path / STATE_FILE
    _backfilled(2, path)
    other = WorldConfig(seed=7, n_users=4_000, n_movies=1_500, new_user_capacity=1_000)
    with pytest.raises(ValueError, match="user slots"):
        Engine(World.build(other), EngineConfig(seed=7)).resume(path)


def test_live_resume_goes_on_with_the_backfills_accounts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "backfill"
    argv = ["backfill", "--days", "1", *WORLD, "--new-accounts-per-day", "400",
            "--run-dir", str(run), "--out", str(tmp_path / "backfill.log")]  # fmt: skip
    assert cli.main(argv) == 0
    summary = json.loads((run / "truth" / "summary.json").read_text())
    with np.load(run / "truth" / STATE_FILE, allow_pickle=False) as z:
        n_active = int(z["n_active"])
        assert (z["memory_movies"] >= 0).any()
    assert n_active == summary["n_active_users"] > 1000
    out = tmp_path / "live.log"
    argv = ["live", *WORLD, "--new-accounts-per-day", "0", "--warmup-hours", "0.5",
            "--duration", "4", "--speed", "3600", "--target", "builtin:popularity",
            "--no-truth", "--out", str(out), "--resume", str(run)]  # fmt: skip
    assert cli.main(argv) == 0
    users = {parse(x).user_id for x in out.read_text().splitlines()}
    assert max(users) > 1000, "the backfill's new accounts stream on in the resumed run"
    assert max(users) <= n_active


def test_live_resume_without_a_saved_state_says_what_to_pass(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["live", *WORLD, "--duration", "1", "--no-truth",
            "--out", str(tmp_path / "live.log"), "--resume", str(tmp_path)]  # fmt: skip
    assert cli.main(argv) != 0
    err = capsys.readouterr().err
    assert "no saved state in" in err and "--resume" in err
    assert "Traceback" not in err
