"""Data-quality checks: windowed ratios with thresholds, a metric each, a log alert on breach.

The consumer feeds per-batch counts (cheap: computed from columns at flush time); every
``window_lines`` lines each check's ratio is published as ``marquee_ingest_dq_ratio{check}`` and a
ratio above its threshold logs one WARNING ``data quality alert`` with the numbers.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from typing import Final

from services.ingest import metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Check:
    """A ratio ``numerator / denominator`` that must stay at or below ``threshold``."""

    name: str
    threshold: float
    description: str


CHECKS: Final[dict[str, Check]] = {
    c.name: c
    for c in (
        Check("rejected_lines", 0.05, "share of lines quarantined for any reason"),
        Check(
            "rating_invalid", 0.02, "share of rate lines with a rating outside 1..5 or not an int"
        ),
        Check(
            "unknown_request", 0.01, "share of lines with an unknown request shape (schema drift)"
        ),
        Check(
            "malformed_lines", 0.02, "share of lines with a bad field count, whitespace or encoding"
        ),
        Check("reco_list_too_long", 0.0, "share of recommendations serving more than 20 ids"),
        Check("reco_list_duplicates", 0.0, "share of recommendations serving a movie id twice"),
        Check("late_events", 0.05, "share of events older than the stream head by the late window"),
        Check(
            "time_out_of_range", 0.001, "share of events far in the future or beyond max lateness"
        ),
        Check("unknown_user", 0.01, "share of looked-up user ids the user API does not know"),
        Check("unknown_movie", 0.01, "share of looked-up movie ids the movie API does not know"),
    )
}

# Which numerator and denominator each check uses, by the names the counters carry.
_MALFORMED: Final = ("bad_field_count", "bad_whitespace", "not_utf8", "empty_line", "line_too_long")


class QualityMonitor:
    """Accumulates counts over a window of lines and evaluates every check when it fills."""

    def __init__(
        self, window_lines: int = 50_000, min_lines: int = 1_000, shape_min_count: int = 20
    ) -> None:
        self.window_lines = window_lines
        self.min_lines = min_lines
        self.shape_min_count = shape_min_count
        self._counts: Counter[str] = Counter()
        self._lookups: Counter[str] = Counter()
        self.alerts: list[tuple[str, float]] = []
        # Unknown request shapes seen in this window; a truncated line makes a one-off shape,
        # a new kind of line repeats, so only shapes seen often enough in a window alert.
        self._shape_counts: Counter[str] = Counter()
        self._shapes_alerted: set[str] = set()

    def observe(self, counts: Counter[str]) -> None:
        """Add a batch's counts: ``lines``, ``event:<type>``, ``reason:<reason>``, check names."""
        self._counts.update(counts)
        for key, n in counts.items():
            if key in CHECKS and n:
                metrics.DQ_VIOLATIONS.labels(key).inc(n)
        if self._counts["lines"] >= self.window_lines:
            self.evaluate()

    def observe_lookup(self, entity: str, looked_up: int, unknown: int) -> None:
        """Add enrichment results: ``unknown`` of ``looked_up`` ids answered 404."""
        check = f"unknown_{entity}"
        self._lookups[f"{check}:n"] += looked_up
        self._lookups[check] += unknown
        if unknown:
            metrics.DQ_VIOLATIONS.labels(check).inc(unknown)
        if self._lookups[f"{check}:n"] >= self.min_lines:
            self._judge(check, self._lookups[check], self._lookups[f"{check}:n"])
            self._lookups[check] = self._lookups[f"{check}:n"] = 0

    def new_shape(self, shape: str) -> bool:
        """Count an unknown request shape; alert once when it recurs in a window. True if so."""
        if shape in self._shapes_alerted:
            return False
        if shape not in self._shape_counts and len(self._shape_counts) >= 10_000:
            return False  # bounded memory under a flood of distinct garbage
        self._shape_counts[shape] += 1
        if self._shape_counts[shape] < self.shape_min_count or len(self._shapes_alerted) >= 1_000:
            return False
        self._shapes_alerted.add(shape)
        log.warning(
            "data quality alert: new request shape %r (schema drift?)",
            shape[:120],
            extra={"check": "unknown_request", "shape": shape[:120]},
        )
        metrics.DQ_ALERTS.labels("new_request_shape").inc()
        return True

    def evaluate(self) -> dict[str, float]:
        """Publish every line-based ratio of the current window, alert on breaches, reset it."""
        c = self._counts
        lines = c["lines"]
        events = sum(v for k, v in c.items() if k.startswith("event:"))
        rejected = sum(v for k, v in c.items() if k.startswith("reason:"))
        rate_bad = c["reason:rating_out_of_range"] + c["reason:bad_rating"]
        recos = c["event:recommendation"]
        ratios = {
            "rejected_lines": self._judge("rejected_lines", rejected, lines),
            "rating_invalid": self._judge("rating_invalid", rate_bad, c["event:rate"] + rate_bad),
            "unknown_request": self._judge("unknown_request", c["reason:unknown_request"], lines),
            "malformed_lines": self._judge(
                "malformed_lines", sum(c[f"reason:{r}"] for r in _MALFORMED), lines
            ),
            "reco_list_too_long": self._judge("reco_list_too_long", c["reco_list_too_long"], recos),
            "reco_list_duplicates": self._judge(
                "reco_list_duplicates", c["reco_list_duplicates"], recos
            ),
            "late_events": self._judge("late_events", c["late_events"], events),
            "time_out_of_range": self._judge(
                "time_out_of_range",
                c["reason:time_in_future"] + c["reason:too_late"],
                events + c["reason:time_in_future"] + c["reason:too_late"],
            ),
        }
        self._counts = Counter()
        self._shape_counts = Counter()
        return ratios

    def _judge(self, name: str, bad: int, total: int) -> float:
        ratio = bad / total if total else 0.0
        metrics.DQ_RATIO.labels(name).set(ratio)
        check = CHECKS[name]
        if total >= self.min_lines and ratio > check.threshold:
            metrics.DQ_ALERTS.labels(name).inc()
            self.alerts.append((name, ratio))
            del self.alerts[:-100]
            log.warning(
                "data quality alert: %s %.4f > threshold %.4f (%s)",
                name,
                ratio,
                check.threshold,
                check.description,
                extra={"check": name, "ratio": ratio, "threshold": check.threshold, "total": total},
            )
        return ratio
