"""The exactly-once check: the store holds every topic record once, as an event or in quarantine."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from services.common.events import format_line
from services.ingest.store import EventStore


def assert_exactly_once(
    store_path: Path, topic_records: list[tuple[int, int, bytes, dict]]
) -> dict:
    """Compare the store with the topic offset by offset; return counts for the report."""
    store = EventStore(store_path)
    events = {}
    dup = Counter()
    for p, o, ev in store.iter_events():
        dup[(p, o)] += 1
        events[(p, o)] = format_line(ev)
    q = store.read("quarantine", columns=["partition", "offset", "raw", "reason"]).to_pylist()
    quarantined = {}
    for r in q:
        dup[(r["partition"], r["offset"])] += 1
        quarantined[(r["partition"], r["offset"])] = (r["raw"], r["reason"])
    doubled = [k for k, n in dup.items() if n > 1]
    assert not doubled, f"{len(doubled)} offsets stored twice, e.g. {doubled[:5]}"
    topic = {(p, o): v for p, o, v, _ in topic_records}
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
    }
