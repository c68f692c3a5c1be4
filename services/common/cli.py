"""``marquee events``: parse stream lines from a file or a Kafka topic and count them by kind."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from tqdm import tqdm

from services.common.cliutil import Parser, not_found, run_cli
from services.common.events import Rejected, parse


def count_lines(lines: Iterable[str | bytes]) -> dict[str, dict[str, int]]:
    """Count events by kind and rejected lines by reason."""
    kinds: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    for line in lines:
        result = parse(line)
        if isinstance(result, Rejected):
            reasons[result.reason.value] += 1
        else:
            kinds[result.kind] += 1
    return {"events": dict(sorted(kinds.items())), "rejected": dict(sorted(reasons.items()))}


def _kafka_lines(bootstrap: str, topic: str, limit: int, idle_s: float) -> Iterator[bytes]:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,  # read-only: a count must not move anybody's committed offsets
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=int(idle_s * 1000),
    )
    try:
        for n, message in enumerate(consumer, 1):
            yield message.value
            if limit and n >= limit:
                return
    finally:
        consumer.close()


def build_parser() -> argparse.ArgumentParser:
    """The ``marquee events`` argument parser."""
    ap = Parser(prog="marquee events", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="{count}")
    c = sub.add_parser(
        "count",
        help="count events by kind and rejections by reason (prints JSON)",
        description="Count events by kind and rejected lines by reason; prints one JSON object.",
    )
    src = c.add_mutually_exclusive_group(required=True)
    src.add_argument("--file", type=Path, help="a file of stream lines ('-' for stdin)")
    src.add_argument("--kafka", metavar="BOOTSTRAP", help="host:port of a broker")
    c.add_argument("--topic", default="movielog", help="topic to read with --kafka")
    c.add_argument("--limit", type=int, default=0, help="stop after this many lines (0: all)")
    c.add_argument("--idle", type=float, default=5.0, help="stop after this many idle seconds")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``marquee events``."""
    return run_cli("marquee events", lambda: _main(argv))


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)

    started = time.perf_counter()
    lines: Iterable[str | bytes]
    if args.kafka:
        lines = _kafka_lines(args.kafka, args.topic, args.limit, args.idle)
    elif str(args.file) == "-":
        lines = sys.stdin
    elif not args.file.is_file():
        raise not_found(f"no stream file {args.file}", "check the path, or pass --file - for stdin")
    else:
        lines = args.file.open(encoding="utf-8", errors="surrogateescape")
    counts = count_lines(tqdm(lines, unit=" lines", disable=not sys.stderr.isatty()))
    total = sum(counts["events"].values()) + sum(counts["rejected"].values())
    out = {**counts, "lines": total, "seconds": round(time.perf_counter() - started, 3)}
    print(json.dumps(out, indent=2))
    return 0
