"""Team-draft interleaving (Radlinski et al., 2008) of two ranked lists.

Each round, the team with fewer picks so far (a coin flip on a tie) adds its best item not yet
in the merged list.  Every item is tagged with the team that picked it, so a click (a watch)
credits one ranker; over many users, the ranker whose picks are watched more is preferred,
with far fewer users than an A/B split needs, because every user sees both rankers.
"""

from __future__ import annotations

import random
from collections.abc import Sequence


def team_draft(
    a: Sequence[str],
    b: Sequence[str],
    names: tuple[str, str],
    k: int = 20,
    rng: random.Random | None = None,
) -> tuple[list[str], list[str]]:
    """Merge rankings ``a`` and ``b`` into at most ``k`` distinct items; (items, team per item)."""
    coin = rng or random
    lists = (a, b)
    pos = [0, 0]
    picks = [0, 0]
    items: list[str] = []
    teams: list[str] = []
    seen: set[str] = set()
    exhausted = [False, False]
    while len(items) < k and not all(exhausted):
        if exhausted[0]:
            team = 1
        elif exhausted[1]:
            team = 0
        elif picks[0] != picks[1]:
            team = 0 if picks[0] < picks[1] else 1
        else:
            team = coin.randrange(2)
        ranking = lists[team]
        while pos[team] < len(ranking) and ranking[pos[team]] in seen:
            pos[team] += 1
        if pos[team] >= len(ranking):
            exhausted[team] = True
            continue
        item = ranking[pos[team]]
        pos[team] += 1
        seen.add(item)
        items.append(item)
        teams.append(names[team])
        picks[team] += 1
    return items, teams
