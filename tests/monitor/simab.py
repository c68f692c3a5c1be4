"""Simulated experiments in process: the simulator's world, the router's assignment, builtin arms.

``SplitRecommender`` stands where the router stands: it assigns each calling user to an arm with
the router's own ``Assigner`` (same hashes as production), asks that arm's builtin recommender
(oracle, popularity, random) and records an exposure event per answer, as the router logs it.
An arm can be made broken (errors, slow answers) to exercise the guardrails.  No HTTP, no
Kafka: a 12-hour experiment over a few thousand users takes a second or two.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from services.common.events import ExposureEvent, format_line
from services.common.experiment import INTERLEAVE, Experiment, validate_config
from services.router.assignment import Assigner
from services.router.interleave import team_draft
from services.simulator.engine import NS, Engine, EngineConfig
from services.simulator.recommenders import RecoAnswer, make_recommender
from services.simulator.world import World, WorldConfig

FALLBACK = ["the+matrix+1999"]


def experiment_config(
    arms: dict[str, float],
    *,
    experiment: str = "exp-1",
    salt: str = "s1",
    exposure: float = 1.0,
    mode: str = "split",
    policy: dict[str, Any] | None = None,
) -> Experiment:
    """A running experiment over ``arms`` (name -> weight %), the first arm is control."""
    names = list(arms)
    doc: dict[str, Any] = {
        "experiment": experiment,
        "salt": salt,
        "status": "running",
        "exposure": exposure,
        "mode": mode,
        "control": names[0],
        "fallback": FALLBACK,
        "arms": [
            {
                "name": n,
                "url": f"http://127.0.0.1:{9000 + i}",
                "weight": w,
                "model": n,
                "channel": "stable" if i == 0 else "canary",
            }
            for i, (n, w) in enumerate(arms.items())
        ],
    }
    if policy is not None:
        doc["policy"] = policy
    return validate_config(doc)


@dataclass
class Broken:
    """An arm that fails: a share of answers are errors, and every answer takes ``latency_ms``."""

    error_share: float = 0.0
    latency_ms: int = 0


@dataclass
class SplitRecommender:
    """The router in process: assign, ask the arm's builtin, record the exposure."""

    world: World
    config: Experiment
    targets: dict[str, str]
    """Arm name -> builtin target (``oracle``, ``popularity``, ``random``)."""
    seed: int = 0
    broken: dict[str, Broken] = field(default_factory=dict)
    host: str = "router:8082"
    start_ns: int = 0
    """Before this time the experiment is not on: control answers, no exposures (pre-period)."""
    exposures: list[ExposureEvent] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.assigner = Assigner(self.config)
        self.arms = {
            a: _target(t, self.world, self.seed + i)
            for i, (a, t) in enumerate(self.targets.items())
        }
        self.rng = np.random.default_rng(self.seed + 99)
        self.coin = random.Random(self.seed + 7)

    def recommend(self, user_ids: npt.NDArray[np.int64], t_ns: int) -> list[RecoAnswer]:
        """One answer per user, in order, and one exposure each."""
        if t_ns < self.start_ns:
            return self.arms[self.config.control].recommend(user_ids, t_ns)
        out: list[RecoAnswer | None] = [None] * len(user_ids)
        groups: dict[str, list[int]] = {}
        labels: list[str] = []
        for i, uid in enumerate(user_ids.tolist()):
            a = self.assigner.assign(int(uid))
            labels.append(a.label)
            groups.setdefault(a.arms[0], []).append(i)
        for arm, idx in groups.items():
            rec = self.arms[arm]
            assert rec is not None
            answers = rec.recommend(user_ids[idx], t_ns)
            for i, ans in zip(idx, answers, strict=True):
                out[i] = ans
        tags: dict[int, tuple[str, ...]] = {}
        inter = [i for i, label in enumerate(labels) if label == INTERLEAVE]
        if inter:
            a, b = (arm.name for arm in self.config.arms)
            other = self.arms[b].recommend(user_ids[inter], t_ns)
            index = self.world.catalog.index
            for i, ans_b in zip(inter, other, strict=True):
                ans_a = out[i]
                assert ans_a is not None
                items, teams = team_draft(ans_a.logged, ans_b.logged, (a, b), rng=self.coin)
                out[i] = RecoAnswer(
                    200, tuple(index[m] for m in items), tuple(items), None, max(ans_a.ms, ans_b.ms)
                )
                tags[i] = tuple(teams)
        result: list[RecoAnswer] = []
        for i, uid in enumerate(user_ids.tolist()):
            ans = out[i]
            assert ans is not None
            label = labels[i]
            arm = label if label in self.arms else self.config.control
            b = self.broken.get(arm)
            ms = ans.ms + (b.latency_ms if b else 0)
            if b and self.rng.random() < b.error_share:
                ans = RecoAnswer(0, (), (), "java.net.ConnectException: Connection refused", ms)
                self.exposures.append(
                    ExposureEvent(
                        t_ns + ms * 1_000_000,
                        int(uid),
                        self.config.experiment,
                        label,
                        None,
                        None,
                        503,
                        ms,
                        "status_5xx",
                        (),
                        None,
                        3,
                    )
                )
            else:
                ans = RecoAnswer(ans.status, ans.movies, ans.logged, ans.error, ms)
                self.exposures.append(
                    ExposureEvent(
                        t_ns + ms * 1_000_000,
                        int(uid),
                        self.config.experiment,
                        label,
                        self.targets[arm],
                        "v1",
                        200,
                        ms,
                        None,
                        ans.logged,
                        tags.get(i),
                        3,
                    )
                )
            result.append(ans)
        return result


class Blend:
    """Oracle lists for a share of calls, popularity lists otherwise: a tunable middle model."""

    def __init__(self, world: World, oracle_share: float, seed: int) -> None:
        self.oracle = make_recommender("builtin:oracle", world, seed=seed)
        self.popular = make_recommender("builtin:popularity", world, seed=seed + 1)
        self.share = oracle_share
        self.rng = np.random.default_rng(seed + 2)
        self.host = "blend:8082"

    def recommend(self, user_ids: npt.NDArray[np.int64], t_ns: int) -> list[RecoAnswer]:
        """Per call, the oracle's list with probability ``share``, else popularity's."""
        assert self.oracle is not None and self.popular is not None
        a = self.oracle.recommend(user_ids, t_ns)
        b = self.popular.recommend(user_ids, t_ns)
        pick = self.rng.random(len(user_ids)) < self.share
        return [x if p else y for x, y, p in zip(a, b, pick.tolist(), strict=True)]


def _target(name: str, world: World, seed: int) -> Any:
    """``oracle``, ``popularity``, ``random`` or ``blend:<oracle share>``."""
    if name.startswith("blend:"):
        return Blend(world, float(name.split(":", 1)[1]), seed)
    return make_recommender(f"builtin:{name}", world, seed=seed)


@dataclass
class SimulatedRun:
    """Stream lines and exposure lines of one simulated experiment."""

    stream: list[str]
    exposures: list[str]
    start_ns: int
    end_ns: int


def simulate(
    config: Experiment,
    targets: dict[str, str],
    *,
    users: int = 3000,
    movies: int = 400,
    hours: float = 12.0,
    seed: int = 1,
    reco_share: float = 1.0,
    broken: dict[str, Broken] | None = None,
    world_seed: int | None = None,
    sessions_per_user_day: float = 4.0,
    warmup_hours: float = 0.0,
) -> SimulatedRun:
    """Run the world with the split recommender; the world is the same for a ``world_seed``.

    The first ``warmup_hours`` are a pre-period without the experiment (CUPED's covariate).
    """
    world = World.build(
        WorldConfig(
            seed=world_seed if world_seed is not None else seed,
            n_users=users,
            n_movies=movies,
            new_user_capacity=100,
        )
    )
    cfg = EngineConfig(
        seed=seed,
        reco_share=reco_share,
        new_accounts_per_day=0.0,
        sessions_per_user_day=sessions_per_user_day,
    )
    start = cfg.start_ns + int(warmup_hours * 3600 * NS)
    split = SplitRecommender(world, config, targets, seed=seed, broken=broken or {}, start_ns=start)
    engine = Engine(world, cfg, split)
    stream: list[str] = []
    end = start + int(hours * 3600 * NS)
    for batch in engine.run(until_ns=end):
        stream.extend(batch.lines)
    exposures = [format_line(e) for e in sorted(split.exposures, key=lambda e: e.time_ns)]
    return SimulatedRun(stream, exposures, start, end)
