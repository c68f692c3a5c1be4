"""A seeded generator of stream lines of every shape, plus malformed lines with known reasons."""

from __future__ import annotations

import random
from dataclasses import dataclass

from services.common.events import (
    CreateAccountEvent,
    Event,
    RateEvent,
    Reason,
    RecommendationEvent,
    WatchEvent,
    format_line,
)

BASE_NS = 1_772_409_600 * 1_000_000_000  # 2026-03-02T00:00:00
MOVIES = [
    "the+lost+harbor+1987",
    "night+of+glass+2004",
    "monsters_+inc.+2001",
    "cheech++chong+1985",
    "schindler's+list+1993",
    "x-men+2000",
    "untitled+",
]
MALFORMED: list[tuple[str, Reason]] = [
    ("2026-03-02T14:21:02,83916", Reason.BAD_FIELD_COUNT),
    ("2026-03-02T14:21:02,83916,GET /rate/x-men+2000=4,extra", Reason.BAD_FIELD_COUNT),
    (" 2026-03-02T14:21:02,83916,GET /create_account", Reason.BAD_WHITESPACE),
    ("2026-03-02T14:21:02, 83916,GET /create_account", Reason.BAD_WHITESPACE),
    ("2026-13-02T14:21:02,83916,GET /create_account", Reason.BAD_TIMESTAMP),
    ("2026-03-02T14:21:02,abc,GET /create_account", Reason.BAD_USER_ID),
    ("2026-03-02T14:21:02,83916,GET /login", Reason.UNKNOWN_REQUEST),
    ("2026-03-02T14:21:02,83916,GET /data/m/the+lost+harb", Reason.BAD_MOVIE_ID),
    ("2026-03-02T14:21:02,83916,GET /data/m/x-men+2000/-4.mpg", Reason.BAD_MINUTE),
    ("2026-03-02T14:21:02,83916,GET /rate/x-men+2000=6", Reason.RATING_OUT_OF_RANGE),
    ("2026-03-02T14:21:02,83916,GET /rate/x-men+2000=4.5", Reason.BAD_RATING),
    ("2026-03-02T14:21:02,83916,GET /rate/x-men+2000=five", Reason.BAD_RATING),
    (
        "2026-03-02T14:21:02,1,recommendation request h:8082, status 2000, result: a+, 5 ms",
        Reason.BAD_RECO_STATUS,
    ),
    (
        "2026-03-02T14:21:02,1,recommendation request h:8082, status 200, result: a+, 5",
        Reason.BAD_RESPONSE_TIME,
    ),
    ("", Reason.EMPTY_LINE),
]


@dataclass
class Generated:
    """Lines in production order, with what each one must parse to."""

    lines: list[str]
    expected: list[Event | Reason]


def generate(n: int, seed: int = 7, malformed_share: float = 0.05) -> Generated:
    """``n`` lines: watches, ratings, accounts and recommendation requests, some malformed."""
    rng = random.Random(seed)
    lines: list[str] = []
    expected: list[Event | Reason] = []
    for i in range(n):
        t = BASE_NS + i * 7_000_000 + rng.randrange(1000) * 1000
        digits = rng.choice((0, 3, 6, 9))
        t -= t % 10 ** (9 - digits)
        user = rng.randrange(1, 1_000_000)
        roll = rng.random()
        event: Event
        if roll < malformed_share:
            line, reason = rng.choice(MALFORMED)
            lines.append(line)
            expected.append(reason)
            continue
        if roll < 0.75:
            event = WatchEvent(t, user, rng.choice(MOVIES), rng.randrange(0, 200), digits)
        elif roll < 0.85:
            event = RateEvent(t, user, rng.choice(MOVIES), rng.randrange(1, 6), digits)
        elif roll < 0.88:
            event = CreateAccountEvent(t, user, digits)
        elif roll < 0.97:
            ids = tuple(rng.sample(MOVIES, rng.randrange(1, len(MOVIES))))
            event = RecommendationEvent(
                t, user, "marquee-router:8082", 200, ids, None, rng.randrange(1, 600), digits
            )
        else:
            event = RecommendationEvent(
                t,
                user,
                "marquee-router:8082",
                0,
                (),
                "java.util.concurrent.TimeoutException: Request timeout to marquee-router/"
                "10.0.0.7:8082 after 600 ms",
                rng.randrange(600, 700),
                digits,
            )
        lines.append(format_line(event))
        expected.append(event)
    return Generated(lines, expected)
