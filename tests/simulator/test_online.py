"""The point of it all: better lists earn more watches, significantly, in the same world."""

from __future__ import annotations

import math

import pytest
from scipy import stats

from services.simulator.evaluation import WatchRate, compare, watch_rate
from services.simulator.world import WorldConfig

WORLD = WorldConfig(seed=21, n_users=6_000, n_movies=2_000, new_user_capacity=500)


def two_proportion_z(a: WatchRate, b: WatchRate) -> tuple[float, float]:
    """One-sided test that ``a``'s rate exceeds ``b``'s: (z, p-value)."""
    p = (a.successes + b.successes) / (a.trials + b.trials)
    se = math.sqrt(p * (1 - p) * (1 / a.trials + 1 / b.trials))
    z = (a.rate - b.rate) / se
    return z, float(stats.norm.sf(z))


def wilson(r: WatchRate, conf: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a rate."""
    z = float(stats.norm.ppf(0.5 + conf / 2))
    n, p = r.trials, r.rate
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def test_watch_rate_counts_only_listed_movies_within_the_window() -> None:
    head = "2026-03-02T10:00:00.000,{},recommendation request h:8082, status {}, result: {}"
    lines = [
        head.format(1, 200, "a+1999, b+2000, 5 ms"),
        head.format(2, 200, "a+1999, 5 ms"),
        head.format(3, 0, "java.net.ConnectException: Connection refused, 1 ms"),
        "2026-03-02T10:05:00,1,GET /data/m/b+2000/0.mpg",
        "2026-03-02T10:16:00,2,GET /data/m/a+1999/0.mpg",
        "2026-03-02T10:05:00,3,GET /data/m/a+1999/0.mpg",
    ]
    assert watch_rate(lines) == WatchRate(1, 2)


@pytest.mark.slow
def test_oracle_beats_popularity_beats_random() -> None:
    rates = compare(WORLD, ["builtin:oracle", "builtin:popularity", "builtin:random"], hours=8)
    oracle, pop, rand = (rates[f"builtin:{n}"] for n in ("oracle", "popularity", "random"))
    for r in (oracle, pop, rand):
        assert r.trials > 1_000
    z1, p1 = two_proportion_z(oracle, pop)
    z2, p2 = two_proportion_z(pop, rand)
    report = {
        n: (round(r.rate, 3), tuple(round(x, 3) for x in wilson(r)), r.trials)
        for n, r in (("oracle", oracle), ("popularity", pop), ("random", rand))
    }
    print(f"15-min watch rates (rate, 95% CI, n): {report}; z={z1:.1f}, {z2:.1f}")
    assert p1 < 1e-6, report
    assert p2 < 1e-6, report
    assert wilson(oracle)[0] > wilson(pop)[1] and wilson(pop)[0] > wilson(rand)[1]
