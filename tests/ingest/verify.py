"""The exactly-once check: the store holds every topic record once, as an event or in quarantine."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from pathlib import Path

from services.common.events import format_line
from services.ingest.store import KINDS, EventStore, rows_to_events

Records = list[tuple[int, int, bytes, dict]]


def assert_exactly_once(store_path: Path, topics: Mapping[str, Records]) -> dict:
    """Compare the store with every topic offset by offset; return counts for the report.

    ``topics`` maps each topic the store consumed to its records (partition, offset, value,
    headers); a row is identified by (topic, partition, offset).
    """
    store = EventStore(store_path)
    events = {}
    dup: Counter[tuple[str, int, int]] = Counter()
    for kind in KINDS:
        table = store.read(kind)
        for topic, (p, o, ev) in zip(
            table["topic"].to_pylist(), rows_to_events(kind, table), strict=True
        ):
            dup[(topic, p, o)] += 1
            events[(topic, p, o)] = format_line(ev)
    q = store.read("quarantine", columns=["topic", "partition", "offset", "raw", "reason"])
    quarantined = {}
    for r in q.to_pylist():
        key = (r["topic"], r["partition"], r["offset"])
        dup[key] += 1
        quarantined[key] = (r["raw"], r["reason"])
    doubled = [k for k, n in dup.items() if n > 1]
    assert not doubled, f"{len(doubled)} offsets stored twice, e.g. {doubled[:5]}"
    topic = {(t, p, o): v for t, recs in topics.items() for p, o, v, _ in recs}
    missing = sorted(set(topic) - set(events) - set(quarantined))
    assert not missing, f"{len(missing)} topic records lost, e.g. {missing[:5]}"
    extra = sorted((set(events) | set(quarantined)) - set(topic))
    assert not extra, f"{len(extra)} stored records not in the topic, e.g. {extra[:5]}"
    wrong = [k for k, line in events.items() if line.encode() != topic[k]]
    assert not wrong, f"{len(wrong)} events differ from their line, e.g. {wrong[:3]}"
    wrong_q = [k for k, (raw, _) in quarantined.items() if raw != topic[k]]
    assert not wrong_q, f"{len(wrong_q)} quarantined lines differ from the topic"
    return {
        "events": len(events),
        "quarantined": len(quarantined),
        "reasons": Counter(reason for _, reason in quarantined.values()),
        "per_topic": Counter(t for t, _, _ in [*events, *quarantined]),
    }
