"""User bucketing: stable across processes, uniform, salt-dependent."""

from __future__ import annotations

import subprocess
import sys

from scipy import stats

from services.common.assignment import BUCKETS, bucket


def test_bucket_is_in_range_and_deterministic() -> None:
    for uid in range(1, 2000):
        b = bucket("exp-1", uid)
        assert 0 <= b < BUCKETS
        assert b == bucket("exp-1", uid)


def test_bucket_is_stable_across_processes() -> None:
    """Python's hash() is salted per process; ours must not be."""
    code = "from services.common.assignment import bucket; print(bucket('exp-1', 123456))"
    outs = {
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.strip()
        for _ in range(3)
    }
    assert outs == {str(bucket("exp-1", 123456))}


def test_known_value_pins_the_hash() -> None:
    """A changed hash would silently reshuffle every running experiment."""
    assert bucket("marquee", 1) == 3743
    assert bucket("marquee", 1_000_000) == 3699


def test_buckets_are_uniform() -> None:
    counts = [0] * 10
    for uid in range(1, 50_001):
        counts[bucket("uniform", uid) * 10 // BUCKETS] += 1
    assert stats.chisquare(counts).pvalue > 0.001


def test_salt_changes_assignment() -> None:
    same = sum(bucket("a", u) == bucket("b", u) for u in range(1, 5001))
    assert same < 50
