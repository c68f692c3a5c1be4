"""Team-draft interleaving: fair, distinct, and each team's picks in its own order."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from services.router.interleave import team_draft

ids = st.lists(st.sampled_from([f"m{i}+" for i in range(40)]), max_size=25, unique=True)


@given(ids, ids, st.integers(0, 2**32), st.integers(1, 20))
def test_team_draft_properties(a: list[str], b: list[str], seed: int, k: int) -> None:
    items, teams = team_draft(a, b, ("A", "B"), k=k, rng=random.Random(seed))
    assert len(items) == len(teams) == min(k, len(set(a) | set(b)))
    assert len(set(items)) == len(items)
    picked = {"A": [m for m, t in zip(items, teams, strict=True) if t == "A"],
              "B": [m for m, t in zip(items, teams, strict=True) if t == "B"]}  # fmt: skip
    assert all(m in a for m in picked["A"]) and all(m in b for m in picked["B"])
    # Each team picks in its own ranking's order.
    assert picked["A"] == sorted(picked["A"], key=a.index)
    assert picked["B"] == sorted(picked["B"], key=b.index)
    # While both lists have something left, the teams' pick counts differ by at most one.
    counts = {"A": 0, "B": 0}
    for i, team in enumerate(teams):
        counts[team] += 1
        left_a = set(a) - set(items[: i + 1])
        left_b = set(b) - set(items[: i + 1])
        if left_a and left_b:
            assert abs(counts["A"] - counts["B"]) <= 1


def test_identical_lists_split_the_credit_evenly() -> None:
    ranking = [f"m{i}+" for i in range(20)]
    rng = random.Random(0)
    total = {"A": 0, "B": 0}
    first = {"A": 0, "B": 0}
    for _ in range(2000):
        items, teams = team_draft(ranking, ranking, ("A", "B"), rng=rng)
        assert items == ranking  # the same ranking, whoever picks
        for t in teams:
            total[t] += 1
        first[teams[0]] += 1
    assert total["A"] == total["B"]
    assert 900 < first["A"] < 1100  # the coin decides who picks first
