"""10,000 stream lines through a real Kafka broker, every one accounted for."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from services.common.events import Reason, Rejected, parse
from services.common.kafka import make_consumer, make_producer
from services.common.settings import KafkaSettings
from tests.common.linegen import generate
from tests.infra import KafkaBroker

pytestmark = pytest.mark.integration


def test_ten_thousand_lines_round_trip_through_real_kafka(kafka: KafkaBroker, topic: str) -> None:
    settings = KafkaSettings(kafka_bootstrap_servers=kafka.bootstrap)
    gen = generate(10_000, seed=11)
    kinds_sent = {type(e).__name__ for e in gen.expected if not isinstance(e, Reason)}
    assert kinds_sent == {"WatchEvent", "RateEvent", "CreateAccountEvent", "RecommendationEvent"}

    producer = make_producer(settings)
    # Key by line number so the test can match every consumed message to what was produced.
    for i, line in enumerate(gen.lines):
        producer.send(topic, key=str(i).encode(), value=line.encode("utf-8"))
    producer.flush(timeout=60)
    producer.close()

    consumer = make_consumer(settings, [topic], group_id=f"roundtrip-{topic}")
    seen: dict[int, object] = {}
    deadline = time.monotonic() + 120
    while len(seen) < len(gen.lines) and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=1000).values():
            for record in records:
                index = int(record.key)
                assert index not in seen, f"line {index} delivered twice"
                seen[index] = parse(record.value)
    consumer.commit()
    consumer.close()

    assert len(seen) == len(gen.lines), f"{len(gen.lines) - len(seen)} lines missing"
    valid = rejected = 0
    by_reason: Counter[Reason] = Counter()
    for index, expected in enumerate(gen.expected):
        got = seen[index]
        if isinstance(expected, Reason):
            assert isinstance(got, Rejected) and got.reason is expected, (index, got)
            rejected += 1
            by_reason[expected] += 1
        else:
            assert got == expected, (index, got, expected)
            valid += 1
    assert valid == sum(not isinstance(e, Reason) for e in gen.expected)
    assert valid + rejected == 10_000
    assert len(by_reason) >= 10  # most rejection kinds went through the broker
