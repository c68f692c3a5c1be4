"""Judging a recommender online from stream lines: calls by status, latency, 15-minute watch rate.

``marquee sim live`` feeds every line it emits to an ``OnlineTally`` and prints its report at
the end; ``marquee sim evaluate FILE`` does the same for a saved stream.  The watch rate is the
contract's, computed by ``services.common.online`` (the one definition the monitor uses too);
this module only turns lines into the tables it reads.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import pyarrow as pa

from services.common import online
from services.common.events import RecommendationEvent, Rejected, WatchEvent, parse

PERCENTILES: Final = (50, 95, 99)


def error_kind(event: RecommendationEvent) -> str | None:
    """What went wrong with a call, in a few stable words (None for a 200)."""
    if event.status == 200:
        return None
    if event.status == 0:
        text = event.error or ""
        if "Timeout" in text:
            return "timeout"
        if "ConnectException" in text or "refused" in text.lower():
            return "connection refused"
        return "no answer"
    return f"HTTP {event.status}"


@dataclass(frozen=True)
class OnlineReport:
    """What a run tells about the recommender it called."""

    requests: dict[str, int]
    """Recommendation calls by HTTP status (``0``: timeout or refused connection)."""
    errors: dict[str, int]
    """Failed calls by kind (``connection refused``, ``timeout``, ``HTTP 500``...)."""
    latency_ms: dict[str, int]
    """Response time of every call as the streaming service logged it: p50, p95, p99, max."""
    watch_rate: online.WatchRate
    lines: int
    rejected: int

    @property
    def calls(self) -> int:
        """Recommendation calls in the stream."""
        return sum(self.requests.values())

    @property
    def failed(self) -> int:
        """Calls that got no list (any status but 200)."""
        return sum(self.errors.values())

    def to_json(self) -> dict[str, Any]:
        """The report as plain JSON types."""
        wr = self.watch_rate
        return {
            "lines": self.lines,
            "rejected_lines": self.rejected,
            "requests": self.calls,
            "requests_by_status": self.requests,
            "errors": self.errors,
            "latency_ms": self.latency_ms,
            "watch_rate_15_min": round(wr.rate, 4) if wr.trials else None,
            "watch_rate_successes": wr.successes,
            "watch_rate_decided_lists": wr.trials,
            "watch_rate_pending_lists": wr.pending,
        }

    def text(self) -> str:
        """A few human-readable lines."""
        by_status = ", ".join(f"{s}: {n}" for s, n in self.requests.items()) or "none"
        out = [f"recommendation requests: {self.calls} (by status {by_status})"]
        if self.errors:
            kinds = ", ".join(f"{k}: {n}" for k, n in self.errors.items())
            out.append(f"failed requests: {self.failed} of {self.calls} ({kinds})")
        if self.latency_ms:
            lat = ", ".join(f"{k} {v}" for k, v in self.latency_ms.items())
            out.append(f"latency ms: {lat}")
        wr = self.watch_rate
        if wr.trials:
            out.append(
                f"15-minute watch rate: {wr.rate:.3f} ({wr.successes} of {wr.trials} decided "
                f"lists; {wr.pending} still within their 15 minutes)"
            )
        else:
            out.append(
                f"15-minute watch rate: n/a (no list decided yet; {wr.pending} still within "
                "their 15 minutes: run longer or faster)"
            )
        return "\n".join(out)


@dataclass
class OnlineTally:
    """Collects from lines (in stream order) what the report needs, and little else."""

    lines: int = 0
    rejected: int = 0
    status: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    _ms: list[int] = field(default_factory=list)
    _lists: list[tuple[int, int, int, tuple[str, ...]]] = field(default_factory=list)
    _watches: list[tuple[int, str, int]] = field(default_factory=list)
    # Per user, the end of the latest served list's window: a watch after it, or of a user who
    # was never served a list, can credit no list, so it is not kept.
    _open_until: dict[int, int] = field(default_factory=dict)
    _last_ns: int = -1
    """Latest event time seen: the stream is complete up to here (kept watches may end sooner)."""

    def add(self, lines: Iterable[str | bytes]) -> None:
        """Take a chunk of stream lines (its recommendations are seen before its watches)."""
        watches: list[WatchEvent] = []
        for line in lines:
            self.lines += 1
            ev = parse(line)
            if isinstance(ev, Rejected):
                self.rejected += 1
                continue
            self._last_ns = max(self._last_ns, ev.time_ns)
            if isinstance(ev, WatchEvent):
                watches.append(ev)
            elif isinstance(ev, RecommendationEvent):
                self._call(ev)
        for w in watches:
            if w.time_ns <= self._open_until.get(w.user_id, -1):
                self._watches.append((w.user_id, w.movie_id, w.time_ns))

    def _call(self, ev: RecommendationEvent) -> None:
        self.status[ev.status] += 1
        self._ms.append(ev.response_time_ms)
        kind = error_kind(ev)
        if kind is not None:
            self.errors[kind] += 1
        self._lists.append((ev.user_id, ev.time_ns, ev.status, ev.result))
        if ev.status == 200 and ev.result:
            end = ev.time_ns + online.WINDOW_NS
            self._open_until[ev.user_id] = max(end, self._open_until.get(ev.user_id, end))

    def report(self, until_ns: int | None = None) -> OnlineReport:
        """The report over everything added so far (lists still in their window are pending).

        ``until_ns``: the time up to which the stream is complete; by default just past the
        latest event seen.
        """
        if until_ns is None:
            until_ns = self._last_ns + 1 if self._last_ns >= 0 else 0
        lists = pa.table(
            {
                "user_id": pa.array([x[0] for x in self._lists], pa.int64()),
                "time_ns": pa.array([x[1] for x in self._lists], pa.int64()),
                "status": pa.array([x[2] for x in self._lists], pa.int64()),
                "result": pa.array([list(x[3]) for x in self._lists], pa.list_(pa.string())),
            }
        )
        watches = pa.table(
            {
                "user_id": pa.array([w[0] for w in self._watches], pa.int64()),
                "movie_id": pa.array([w[1] for w in self._watches], pa.string()),
                "time_ns": pa.array([w[2] for w in self._watches], pa.int64()),
            }
        )
        latency: dict[str, int] = {}
        if self._ms:
            ms = np.asarray(self._ms, np.int64)
            for q in PERCENTILES:
                latency[f"p{q}"] = int(np.percentile(ms, q, method="higher"))
            latency["max"] = int(ms.max())
        return OnlineReport(
            requests={str(s): n for s, n in sorted(self.status.items(), key=lambda x: -x[1])},
            errors=dict(self.errors.most_common()),
            latency_ms=latency,
            watch_rate=online.watch_rate(lists, watches, until_ns=until_ns),
            lines=self.lines,
            rejected=self.rejected,
        )
