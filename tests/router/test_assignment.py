"""Assignment: uniform, weighted, sticky across processes, and ramps that never reshuffle."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from collections import Counter
from typing import Any

import numpy as np
import pytest

from services.common.assignment import BUCKETS, bucket
from services.router.assignment import Assigner
from services.router.config import INTERLEAVE, UNEXPOSED, Experiment
from tests.router.conftest import experiment

URLS = {"control": "http://127.0.0.1:1", "a": "http://127.0.0.1:2", "b": "http://127.0.0.1:3"}


def config(**overrides: Any) -> Experiment:
    """A three-arm experiment, overridable field by field."""
    return Experiment.model_validate(experiment(URLS, **overrides))


def arms(weights: tuple[float, float, float]) -> list[dict[str, Any]]:
    """The three arms with ``weights``."""
    return [
        {"name": n, "url": u, "weight": w} for (n, u), w in zip(URLS.items(), weights, strict=True)
    ]


def chi_square(observed: list[int], expected: list[float]) -> float:
    """Pearson's statistic."""
    return sum((o - e) ** 2 / e for o, e in zip(observed, expected, strict=True))


def chi_square_upper(df: int, z: float = 4.0) -> float:
    """An upper bound of chi-square(df) at about z sigma (Wilson-Hilferty), no scipy needed."""
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


@pytest.mark.slow
def test_buckets_are_uniform_over_a_million_users() -> None:
    counts = np.bincount([bucket("exp-1", u) for u in range(1, 1_000_001)], minlength=BUCKETS)
    expected = 1_000_000 / BUCKETS
    stat = float(((counts - expected) ** 2 / expected).sum())
    assert stat < chi_square_upper(BUCKETS - 1)
    # And not suspiciously perfect either (a counter, not a hash, would give ~0).
    assert stat > BUCKETS - 1 - 4 * math.sqrt(2 * (BUCKETS - 1))


def test_weights_and_exposure_are_honoured() -> None:
    cfg = config(arms=arms((10, 30, 60)), exposure=0.4)
    assigner = Assigner(cfg)
    n = 200_000
    labels = Counter(assigner.assign(u).label for u in range(1, n + 1))
    exposed = n - labels[UNEXPOSED]
    assert abs(exposed / n - 0.4) < 4 * math.sqrt(0.4 * 0.6 / n)
    observed = [labels["control"], labels["a"], labels["b"]]
    assert chi_square(observed, [exposed * w for w in (0.1, 0.3, 0.6)]) < chi_square_upper(2)


def test_unexposed_users_get_control_and_are_not_exposed() -> None:
    assigner = Assigner(config(exposure=0.3))
    for user in range(1, 2000):
        a = assigner.assign(user)
        if not a.exposed:
            assert a.label == UNEXPOSED and a.arms == ("control",)
        else:
            assert a.label == a.arms[0] == assigner.arm_of(user)


def test_same_user_same_arm_in_other_processes_and_after_restart() -> None:
    cfg_path = os.path.join(os.path.dirname(__file__), "..", "..", "services", "router")
    example = os.path.join(cfg_path, "experiment.example.yaml")
    from services.router.config import load_config

    here = Assigner(load_config(example))
    users = list(range(1, 3001))
    mine = [f"{u} {here.assign(u).label} {'+'.join(here.assign(u).arms)}" for u in users]
    for seed in ("0", "12345"):  # a different hash seed in each process: must not matter
        out = subprocess.run(
            [sys.executable, "-m", "services.cli", "route", "assign", "--config", example,
             "1-3000"],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout.splitlines()  # fmt: skip
        assert out == mine


@pytest.mark.parametrize("mode", ["split", "interleave"])
def test_ramping_exposure_moves_users_only_into_the_experiment(mode: str) -> None:
    two = {"arms": arms((50, 50, 0))[:2]} if mode == "interleave" else {}
    users = range(1, 50_001)
    before: dict[int, str] = {}
    for share in (0.01, 0.05, 0.2, 0.5, 1.0):
        assigner = Assigner(config(exposure=share, mode=mode, **two))
        now = {u: assigner.assign(u).label for u in users}
        for user, label in before.items():
            if label != UNEXPOSED:
                assert now[user] == label, "an exposed user changed arm while ramping"
        exposed = sum(label != UNEXPOSED for label in now.values())
        assert abs(exposed / len(users) - share) < 0.01
        before = now
    if mode == "interleave":
        assert set(before.values()) == {INTERLEAVE}


def test_shifting_weight_between_adjacent_arms_moves_only_those_users() -> None:
    old = Assigner(config(arms=arms((20, 40, 40))))
    new = Assigner(config(arms=arms((20, 30, 50))))  # 10 points from 'a' to 'b'
    moved = Counter(
        (old.arm_of(u), new.arm_of(u)) for u in range(1, 100_001) if old.arm_of(u) != new.arm_of(u)
    )
    assert set(moved) == {("a", "b")}
    assert abs(moved[("a", "b")] / 100_000 - 0.10) < 0.005


def test_status_decides_who_is_exposed() -> None:
    users = range(1, 5001)
    for status in ("draft", "paused", "rolled_back"):
        assigner = Assigner(config(status=status))
        assert {assigner.assign(u).arms for u in users} == {("control",)}
        assert not any(assigner.assign(u).exposed for u in users)
    promoted = Assigner(config(status="promoted", winner="b"))
    assert {promoted.assign(u).arms for u in users} == {("b",)}
    # Resuming a paused experiment gives every user the arm they had before.
    running, resumed = Assigner(config()), Assigner(config(status="running"))
    assert all(running.assign(u) == resumed.assign(u) for u in users)


def test_shadow_share_is_a_stable_share_of_users() -> None:
    assigner = Assigner(config(shadow={"url": "http://127.0.0.1:9", "share": 0.1}))
    picked = [u for u in range(1, 100_001) if assigner.assign(u).shadow]
    assert abs(len(picked) / 100_000 - 0.1) < 0.005
    assert picked == [u for u in range(1, 100_001) if assigner.assign(u).shadow]
