"""Online success as the course measured it, computed from stream lines (no HTTP, no Kafka).

A recommendation succeeds when the same user starts watching any recommended movie within
15 minutes after receiving it.  ``compare`` runs the same seeded world once per recommender
so list quality is the only difference between the arms.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from services.common.events import RecommendationEvent, WatchEvent, parse
from services.simulator.engine import NS, Engine, EngineConfig
from services.simulator.recommenders import make_recommender
from services.simulator.world import World, WorldConfig

WINDOW_S: Final = 15 * 60


@dataclass(frozen=True)
class WatchRate:
    """Successes out of successful (status 200, non-empty) recommendations."""

    successes: int
    trials: int

    @property
    def rate(self) -> float:
        """Share of recommendations followed by a watch of a listed movie in the window."""
        return self.successes / self.trials if self.trials else 0.0


def watch_rate(lines: Iterable[str], window_s: int = WINDOW_S) -> WatchRate:
    """Score recommendation lines by the watches that follow them (lines in stream order)."""
    pending: dict[int, tuple[int, frozenset[str]]] = {}
    successes = trials = 0
    window = window_s * NS
    for line in lines:
        ev = parse(line)
        if isinstance(ev, RecommendationEvent):
            if ev.status == 200 and ev.result:
                trials += 1
                pending[ev.user_id] = (ev.time_ns, frozenset(ev.result))
        elif isinstance(ev, WatchEvent):
            p = pending.get(ev.user_id)
            if p is None:
                continue
            if ev.time_ns - p[0] > window:
                del pending[ev.user_id]
            elif ev.movie_id in p[1]:
                successes += 1
                del pending[ev.user_id]
    return WatchRate(successes, trials)


def simulate_lines(
    world_config: WorldConfig, target: str, hours: float, seed: int, reco_share: float = 1.0
) -> list[str]:
    """Lines of a fresh world (same seed, same users) whose sessions ask ``target``."""
    world = World.build(world_config)
    rec = make_recommender(target, world, seed=seed + 5)
    cfg = EngineConfig(seed=seed, reco_share=reco_share)
    engine = Engine(world, cfg, rec)
    out: list[str] = []
    for batch in engine.run(until_ns=cfg.start_ns + int(hours * 3600 * NS)):
        out.extend(batch.lines)
    return out


def compare(
    world_config: WorldConfig, targets: Iterable[str], hours: float = 12.0, seed: int = 1
) -> dict[str, WatchRate]:
    """15-minute watch rate of each recommender on the same seeded world."""
    return {t: watch_rate(simulate_lines(world_config, t, hours, seed)) for t in targets}
