"""Stream-line parser throughput on one core, beside the floor of merely splitting each line.

The mix follows a real stream: mostly watch minutes, then recommendation requests, ratings,
new accounts and ~2% malformed lines.  Target: >= 300,000 lines/s for ``parse``.
"""

from __future__ import annotations

import os
import time
from typing import Any

from services.common.events import Rejected, format_line, parse
from tests.common.linegen import generate


def _best_rate(fn: Any, lines: list[str], repeats: int) -> float:
    """Lines per second of the fastest of ``repeats`` passes (the least disturbed by noise)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for line in lines:
            fn(line)
        best = min(best, time.perf_counter() - start)
    return len(lines) / best


def run(quick: bool = False) -> dict[str, Any]:
    """Measure parse, split-only and format rates over the same lines."""
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core, as the target says
    n = 50_000 if quick else 200_000
    gen = generate(n, seed=3, malformed_share=0.02)
    lines = gen.lines
    repeats = 3 if quick else 5
    parse_rate = _best_rate(parse, lines, repeats)
    split_rate = _best_rate(lambda s: s.split(",", 2), lines, repeats)
    events = [e for e in map(parse, lines) if not isinstance(e, Rejected)]
    start = time.perf_counter()
    for e in events:
        format_line(e)
    format_rate = len(events) / (time.perf_counter() - start)
    return {
        "lines": n,
        "parse_lines_per_s": round(parse_rate),
        "split_only_lines_per_s": round(split_rate),
        "parse_vs_split_ratio": round(parse_rate / split_rate, 3),
        "format_events_per_s": round(format_rate),
        "target_lines_per_s": 300_000,
        "meets_target": parse_rate >= 300_000,
    }
