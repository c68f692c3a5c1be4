"""Exposures through real Kafka: the router's ``exposures`` topic, keyed by user, into the store."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from services.common.events import ExposureEvent, format_line, parse
from services.common.store import EventStoreReader
from services.ingest.consumer import IngestService
from services.ingest.settings import IngestSettings
from tests.common.test_events import EXPOSURE_LINES
from tests.infra import KafkaBroker, wait_until
from tests.ingest.helpers import producer

pytestmark = pytest.mark.integration


def exposure_lines(n: int) -> list[str]:
    """``n`` exposure lines: the contract's examples, re-timed and spread over users."""
    out = []
    for i in range(n):
        ev = parse(EXPOSURE_LINES[i % len(EXPOSURE_LINES)])
        assert isinstance(ev, ExposureEvent)
        out.append(format_line(ev._replace(time_ns=ev.time_ns + i * 10**9, user_id=1 + i % 37)))
    return out


def test_exposures_topic_is_ingested_into_the_store(kafka: KafkaBroker, tmp_path: Path) -> None:
    topic = kafka.create_topic(f"exposures-{tmp_path.name[-8:]}", partitions=3)
    values = exposure_lines(300)
    p = producer(kafka.bootstrap)
    futures = [
        p.send(topic, key=line.split(",", 2)[1].encode(), value=line.encode()) for line in values
    ]
    p.flush()
    sent = [f.get(timeout=30) for f in futures]
    p.close()
    ends: dict[int, int] = {}
    for md in sent:
        ends[md.partition] = max(ends.get(md.partition, 0), md.offset + 1)
    settings = IngestSettings(
        kafka_bootstrap_servers=kafka.bootstrap,
        store_path=tmp_path / "store",
        topics=(topic,),
        dlq_enabled=False,
        group_id=f"g-{topic}",
        group_instance_id=None,
        flush_interval_s=0.2,
        session_timeout_ms=6_000,
    )
    service = IngestService(settings)
    rc: list[int] = []
    thread = threading.Thread(target=lambda: rc.append(service.run()), daemon=True)
    thread.start()
    try:
        wait_until(
            lambda: EventStoreReader(settings.store_path).topic_offsets(topic) == ends,
            60,
            what="ingest",
        )
    finally:
        service.stop()
        thread.join(60)
    assert rc == [0]
    reader = EventStoreReader(settings.store_path)
    assert reader.counts() == {"exposure": len(values)}
    stored = sorted(format_line(e) for _, _, e in reader.iter_events())
    assert stored == sorted(values)
    # Keyed by user: every user's exposures sit in one partition.
    rows = reader.read("exposure", columns=["topic", "partition", "offset", "user_id"])
    assert set(rows["topic"].to_pylist()) == {topic}
    by_user: dict[int, set[int]] = {}
    for r in rows.to_pylist():
        by_user.setdefault(r["user_id"], set()).add(r["partition"])
    assert all(len(parts) == 1 for parts in by_user.values())
