"""Helpers shared by the simulator tests: a small world and an in-memory run."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from services.common.events import WatchEvent, parse
from services.simulator.engine import NS, Engine, EngineConfig
from services.simulator.recommenders import make_recommender
from services.simulator.scenarios import Scenario
from services.simulator.sinks import MemorySink
from services.simulator.world import World, WorldConfig

SMALL = WorldConfig(seed=7, n_users=4_000, n_movies=1_500, new_user_capacity=3_000)


def run_lines(
    hours: float = 3.0,
    scenario: Scenario | None = None,
    target: str = "builtin:popularity",
    config: WorldConfig = SMALL,
    reco_share: float = 0.3,
    seed: int = 7,
) -> tuple[list[str], Engine]:
    """Simulate ``hours`` of a fresh small world in memory; return (lines, engine)."""
    world = World.build(config)
    rec = make_recommender(target, world, seed=seed + 5)
    cfg = EngineConfig(
        seed=seed,
        reco_share=reco_share,
        new_accounts_per_day=150,
        scenario=scenario or Scenario(),
    )
    engine = Engine(world, cfg, rec)
    sink = MemorySink()
    for batch in engine.run(until_ns=cfg.start_ns + int(hours * 3600 * NS)):
        sink.write(batch.lines, batch.users)
    return sink.lines, engine


def session_starts(lines: Iterable[str]) -> Iterator[WatchEvent]:
    """The watch lines that start a viewing session, in stream order.

    A session streams one line a minute of one movie; any other step starts a new one.
    """
    last: dict[int, tuple[str, int]] = {}
    for line in lines:
        ev = parse(line)
        if not isinstance(ev, WatchEvent):
            continue
        prev = last.get(ev.user_id)
        if prev is None or prev[0] != ev.movie_id or ev.time_ns - prev[1] != 60 * NS:
            yield ev
        last[ev.user_id] = (ev.movie_id, ev.time_ns)
