"""Small hand-made experiments: exposure and watch events with known outcomes."""

from __future__ import annotations

from pathlib import Path

from services.common.events import ExposureEvent, RateEvent, WatchEvent, format_line

S = 1_000_000_000
MIN = 60 * S
T0 = 1_772_400_000 * S  # 2026-03-01T21:20:00


def exposure(
    t: int,
    user: int,
    arm: str,
    items: tuple[str, ...] = ("alpha+1999", "beta+2001"),
    *,
    experiment: str = "exp-1",
    status: int = 200,
    latency: int = 20,
    fallback: str | None = None,
    item_arms: tuple[str, ...] | None = None,
) -> ExposureEvent:
    """One exposure event (status 200 unless told)."""
    model = (None, None) if status != 200 else ("svd", "v1")
    return ExposureEvent(
        t,
        user,
        experiment,
        arm,
        model[0],
        model[1],
        status,
        latency,
        fallback,
        items if status == 200 else (),
        item_arms,
        3,
    )


def watch(t: int, user: int, movie: str = "alpha+1999", minute: int = 0) -> WatchEvent:
    """One watch minute."""
    return WatchEvent(t, user, movie, minute, 3)


def rate(t: int, user: int, movie: str = "alpha+1999", rating: int = 4) -> RateEvent:
    """One rating."""
    return RateEvent(t, user, movie, rating, 3)


def write_lines(path: Path, events: list) -> Path:
    """The events as stream lines in time order."""
    events = sorted(events, key=lambda e: e.time_ns)
    path.write_text("".join(format_line(e) + "\n" for e in events), encoding="utf-8")
    return path
