"""A small deterministic stream generator for ingest tests (independent of the simulator)."""

from __future__ import annotations

import random
from collections.abc import Iterator

from services.common.events import (
    CreateAccountEvent,
    Event,
    ExposureEvent,
    RateEvent,
    RecommendationEvent,
    WatchEvent,
    format_line,
    parse_time,
)

T0 = parse_time("2026-03-02T00:00:00")[0]  # type: ignore[index]
MOVIES = [
    "the+lost+harbor+1987",
    "night+of+glass+2004",
    "red+river+crossing+1951",
    "monsters_+inc.+2001",
    "cheech++chong+1985",
    "the+godfather+1972",
    "untitled+project+",
    "l'été+meurtrier+1983",
] + [f"movie+{i}+{1950 + i % 70}" for i in range(200)]


def events(n: int, seed: int = 0, users: int = 500, start_ns: int = T0) -> Iterator[Event]:
    """``n`` valid events in (mostly) increasing time, all four kinds, every time precision."""
    rng = random.Random(seed)
    t = start_ns
    for i in range(n):
        t += rng.randrange(1, 200_000_000)
        digits = rng.choice((0, 0, 3, 6, 9))
        tt = t - t % 10 ** (9 - digits) if digits else t - t % 1_000_000_000
        u = rng.randrange(1, users)
        r = rng.random()
        if r < 0.8:
            yield WatchEvent(tt, u, rng.choice(MOVIES), rng.randrange(0, 180), digits)
        elif r < 0.88:
            yield RateEvent(tt, u, rng.choice(MOVIES), rng.randint(1, 5), digits)
        elif r < 0.9:
            yield CreateAccountEvent(tt, u + i, digits)
        elif r < 0.97:
            ids = tuple(rng.sample(MOVIES, rng.randint(0, 20)))
            yield RecommendationEvent(
                tt, u, "marquee-router:8082", 200, ids, None, rng.randrange(1, 600), digits
            )
        else:
            err = "java.util.concurrent.TimeoutException: Request timeout to x/10.0.0.7:8082"
            yield RecommendationEvent(
                tt, u, "marquee-router:8082", rng.choice((0, 500)), (), err, 612, digits
            )


def lines(n: int, seed: int = 0, **kw: int) -> list[str]:
    """``n`` valid stream lines."""
    return [format_line(e) for e in events(n, seed, **kw)]


def exposure_lines(n: int, seed: int = 0, start_ns: int = T0, users: int = 500) -> list[str]:
    """``n`` valid exposure lines (the router's topic), in increasing time, every arm shape."""
    rng = random.Random(seed)
    t, out = start_ns, []
    for _ in range(n):
        t += rng.randrange(1, 2_000_000_000)
        t -= t % 1_000_000  # milliseconds, as the router writes
        r = rng.random()
        items = tuple(rng.sample(MOVIES[7:], rng.randint(1, 20)))
        if r < 0.7:
            ev = ExposureEvent(t, rng.randrange(1, users), "canary-7", "canary", "svd", "3f9c",
                               200, rng.randrange(1, 300), None, items, None, 3)  # fmt: skip
        elif r < 0.9:
            arms = tuple(rng.choice(("svd", "als")) for _ in items)
            ev = ExposureEvent(t, rng.randrange(1, users), "ab-3", "interleave", "svd", "1a2b",
                               200, rng.randrange(1, 300), None, items, arms, 3)  # fmt: skip
        else:
            ev = ExposureEvent(t, rng.randrange(1, users), "canary-7", "canary", None, None,
                               503, 3, "no_model", (), None, 3)  # fmt: skip
        out.append(format_line(ev))
    return out


# Malformed lines of every kind, with the reason ingest must quarantine them under.
MALFORMED: list[tuple[bytes, str]] = [
    (b"", "empty_line"),
    (b"\xff\xfe2026-03-02T10:00:00,1,GET /create_account", "not_utf8"),
    (b"2026-03-02T10:00:00,1," + b"x" * 70_000, "line_too_long"),
    (b"2026-03-02T10:00:00,GET /create_account", "bad_field_count"),
    (b"2026-03-02T10:00:00,12,GET /data/m/the+godfather+1972/3.mpg,extra", "bad_field_count"),
    (b" 2026-03-02T10:00:00,12,GET /create_account", "bad_whitespace"),
    (b"2026-03-02T10:00:00, 12,GET /create_account", "bad_whitespace"),
    (b"2026-03-02T10:00:00,12, GET /create_account", "bad_whitespace"),
    (b"2026-13-02T10:00:00,12,GET /create_account", "bad_timestamp"),
    (b"2026-03-02 10:00:00,12,GET /create_account", "bad_timestamp"),
    (b"2026-02-30T10:00:00,12,GET /create_account", "bad_timestamp"),
    (b"2026-03-02T10:00:00,abc,GET /create_account", "bad_user_id"),
    (b"2026-03-02T10:00:00,-5,GET /create_account", "bad_user_id"),
    (b"2026-03-02T10:00:00,0,GET /create_account", "bad_user_id"),
    (b"2026-03-02T10:00:00,12,GET /search?q=foo", "unknown_request"),
    (b"2026-03-02T10:00:00,12,POST /rate/the+godfather+1972=4", "unknown_request"),
    (b"2026-03-02T10:00:00,12,GET /data/m/The Godfather/3.mpg", "bad_movie_id"),
    (b"2026-03-02T10:00:00,12,GET /data/m/the+godfather+1972", "bad_movie_id"),
    (b"2026-03-02T10:00:00,12,GET /data/m/the+godfather+1972/abc.mpg", "bad_minute"),
    (b"2026-03-02T10:00:00,12,GET /data/m/the+godfather+1972/99999.mpg", "bad_minute"),
    (b"2026-03-02T10:00:00,12,GET /rate/the+godfather+1972=4.5", "bad_rating"),
    (b"2026-03-02T10:00:00,12,GET /rate/the+godfather+1972=five", "bad_rating"),
    (b"2026-03-02T10:00:00,12,GET /rate/the+godfather+1972", "bad_rating"),
    (b"2026-03-02T10:00:00,12,GET /rate/the+godfather+1972=0", "rating_out_of_range"),
    (b"2026-03-02T10:00:00,12,GET /rate/the+godfather+1972=6", "rating_out_of_range"),
    (b"2026-03-02T10:00:00,12,GET /rate/the+godfather+1972=100", "rating_out_of_range"),
    (
        b"2026-03-02T10:00:00,12,recommendation request r:8082, status 9999, result: a+1999, 5 ms",
        "bad_reco_status",
    ),
    (
        b"2026-03-02T10:00:00,12,recommendation request r:8082, status 200, result: Bad Id, 5 ms",
        "bad_reco_result",
    ),
    (
        b"2026-03-02T10:00:00,12,recommendation request r:8082, status 200, result: a+1999, 5",
        "bad_response_time",
    ),
    (
        b"2026-03-02T10:00:00,12,recommendation request r:8082, status 200, result: a+1999, x ms",
        "bad_response_time",
    ),
    (b"2026-03-02T10:00:00,12,GET /data/m/the+godf", "bad_movie_id"),
    (b"2099-03-02T10:00:00,12,GET /create_account", "time_in_future"),
    (b"2020-03-02T10:00:00,12,GET /create_account", "too_late"),
]
