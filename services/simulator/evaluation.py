"""Online success of simulated recommenders, computed from stream lines (no HTTP, no Kafka).

The definition lives once in ``services.common.online`` (a served list succeeds when its user
starts watching a listed movie within 15 minutes after it); this module turns stream lines into
its Arrow inputs.  ``compare`` runs the same seeded world once per recommender so list quality
is the only difference between the arms.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Final

import pyarrow as pa

from services.common import online
from services.common.events import RecommendationEvent, WatchEvent, parse
from services.common.online import WatchRate
from services.simulator.engine import NS, Behaviour, Engine, EngineConfig, saved_end_ns
from services.simulator.recommenders import make_recommender
from services.simulator.world import World, WorldConfig

__all__ = ["WINDOW_S", "WatchRate", "compare", "line_tables", "simulate_lines", "watch_rate"]

WINDOW_S: Final = online.WINDOW_NS // NS


def line_tables(lines: Iterable[str]) -> tuple[pa.Table, pa.Table]:
    """The recommendation lines and the watches among ``lines``, as ``services.common.online``
    takes them (lists: time, user, status, result; watches: time, user, movie)."""
    recos: list[RecommendationEvent] = []
    watches: list[WatchEvent] = []
    for line in lines:
        ev = parse(line)
        if isinstance(ev, RecommendationEvent):
            recos.append(ev)
        elif isinstance(ev, WatchEvent):
            watches.append(ev)
    lists = pa.table(
        {
            "time_ns": pa.array([e.time_ns for e in recos], pa.int64()),
            "user_id": pa.array([e.user_id for e in recos], pa.int64()),
            "status": pa.array([e.status for e in recos], pa.int16()),
            "result": pa.array([e.result for e in recos], pa.list_(pa.string())),
        }
    )
    seen = pa.table(
        {
            "time_ns": pa.array([e.time_ns for e in watches], pa.int64()),
            "user_id": pa.array([e.user_id for e in watches], pa.int64()),
            "movie_id": pa.array([e.movie_id for e in watches], pa.string()),
        }
    )
    return lists, seen


def watch_rate(lines: Iterable[str], window_s: int = WINDOW_S) -> WatchRate:
    """The watch rate of the recommendation lines among ``lines``, judged by their watches."""
    lists, seen = line_tables(lines)
    return online.watch_rate(lists, seen, window_ns=window_s * NS)


def simulate_lines(
    world_config: WorldConfig,
    target: str,
    hours: float,
    seed: int,
    reco_share: float = 1.0,
    behaviour: Behaviour | None = None,
    new_accounts_per_day: float | None = None,
    resume: Path | str | None = None,
) -> list[str]:
    """Lines of a fresh world (same seed, same users) whose sessions ask ``target``.

    ``new_accounts_per_day``: the world's rate of new accounts (None: the engine's default).
    ``resume``: a run's saved state (``<run-dir>/truth/state.npz``): the world goes on from
    where that run ended, its accounts open and its users remembering what they finished, so a
    model is judged by the users whose history it learned from, not by users who forgot it.
    """
    world = World.build(world_config)
    rec = make_recommender(target, world, seed=seed + 5)
    cfg = EngineConfig(seed=seed, reco_share=reco_share, behaviour=behaviour or Behaviour())
    if resume is not None:
        cfg.start_ns = saved_end_ns(resume)
    if new_accounts_per_day is not None:
        cfg.new_accounts_per_day = new_accounts_per_day
    engine = Engine(world, cfg, rec)
    if resume is not None:
        engine.resume(resume)
    out: list[str] = []
    for batch in engine.run(until_ns=cfg.start_ns + int(hours * 3600 * NS)):
        out.extend(batch.lines)
    return out


def compare(
    world_config: WorldConfig, targets: Iterable[str], hours: float = 12.0, seed: int = 1
) -> dict[str, WatchRate]:
    """15-minute watch rate of each recommender on the same seeded world."""
    return {t: watch_rate(simulate_lines(world_config, t, hours, seed)) for t in targets}
