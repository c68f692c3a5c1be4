"""The consumer against real Kafka: malformed lines to the quarantine and the dead-letter topic,
from several topics into one store, a subscribed topic that does not exist yet included."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from services.ingest.consumer import IngestService
from services.ingest.settings import IngestSettings
from services.ingest.store import EventStore
from tests.infra import KafkaBroker, free_port, wait_until
from tests.ingest.helpers import produce, read_topic
from tests.ingest.streamgen import MALFORMED, exposure_lines, lines

pytestmark = pytest.mark.integration


def _rejected(reason: str) -> float:
    return REGISTRY.get_sample_value("marquee_ingest_rejected_total", {"reason": reason}) or 0.0


def test_malformed_corpus_is_quarantined_and_dead_lettered(
    kafka: KafkaBroker, topic: str, tmp_path: Path
) -> None:
    dlq = kafka.create_topic(partitions=1)
    exposures = kafka.create_topic(f"exposures-{topic}")
    later = f"later-{topic}"  # subscribed, but does not exist: ingest creates it
    valid = [v.encode() for v in lines(500, seed=3)]
    # All on partition 0, valid lines first: the time checks need a stream head.
    values = valid + [raw for raw, _ in MALFORMED]
    produce(kafka.bootstrap, topic, values, partitions=1)
    shown = [v.encode() for v in exposure_lines(100, seed=3)] + [MALFORMED[0][0]]
    produce(kafka.bootstrap, exposures, shown, partitions=1)
    before = {r: _rejected(r) for _, r in MALFORMED}
    settings = IngestSettings(
        kafka_bootstrap_servers=kafka.bootstrap,
        store_path=tmp_path / "store",
        topics=(topic, exposures, later),
        topic_partitions=2,
        dlq_topic=dlq,
        group_id=f"g-{topic}",
        group_instance_id=None,
        flush_interval_s=0.2,
        session_timeout_ms=6_000,
        # Nothing listens there: an unreachable metadata API must not hold up ingestion.
        enrich_url=f"http://127.0.0.1:{free_port()}",
        enrich_timeout_s=0.2,
    )
    service = IngestService(settings)
    rc: list[int] = []
    thread = threading.Thread(target=lambda: rc.append(service.run()), daemon=True)
    thread.start()
    ends = {(topic, 0): len(values), (exposures, 0): len(shown)}
    try:
        wait_until(lambda: service.ready()[0], 60, what="partition assignment")
        wait_until(lambda: EventStore(settings.store_path).next_offsets() == ends, 60)
        assert thread.is_alive()  # a missing topic is no reason to stop
        produce(kafka.bootstrap, later, valid[:50], partitions=2)
        ends |= {(later, 0): 25, (later, 1): 25}
        wait_until(
            lambda: EventStore(settings.store_path).next_offsets() == ends, 60, what="new topic"
        )
    finally:
        service.stop()
        thread.join(60)
    assert rc == [0]
    q = EventStore(settings.store_path).read("quarantine").to_pylist()
    got = {(r["topic"], r["offset"]): (r["reason"], r["raw"]) for r in q}
    expected = {(topic, len(valid) + i): (reason, raw) for i, (raw, reason) in enumerate(MALFORMED)}
    expected[(exposures, len(shown) - 1)] = (MALFORMED[0][1], MALFORMED[0][0])
    assert got == expected
    counts = EventStore(settings.store_path).counts()
    assert counts["watch"] > 0 and counts["exposure"] == len(shown) - 1
    dead = read_topic(kafka.bootstrap, dlq)
    by_offset = {
        (h["topic"].decode(), int(h["offset"])): (h["reason"].decode(), v) for _, _, v, h in dead
    }
    assert by_offset == expected
    assert all(h["partition"] == b"0" and h["detail"] for _, _, _, h in dead)
    for reason, n in (Counter(r for _, r in MALFORMED) + Counter([MALFORMED[0][1]])).items():
        assert _rejected(reason) - before[reason] == n
    # The group's committed offsets follow the durable store, topic by topic.
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=kafka.bootstrap, group_id=f"g-{topic}")
    assert {tp: c.committed(TopicPartition(*tp)) for tp in ends} == ends
    c.close()
