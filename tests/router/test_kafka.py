"""Exposure events on real Kafka: the right arm and model version, through ingest into the
event store; and a Kafka outage mid-load that no request notices, with honest counters."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from kafka import KafkaConsumer, TopicPartition

from services.common.events import ExposureEvent, parse
from tests.infra import KafkaBroker, wait_until
from tests.router.conftest import experiment, write_experiment
from tests.router.servers import Load, Proc, register_models, start_recommender, start_router

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def arms(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, Proc], dict]]:  # type: ignore[type-arg]
    tmp = tmp_path_factory.mktemp("router-kafka")
    root = tmp / "registry"
    models = register_models(root)
    procs = {
        "control": start_recommender(root, "svd", tmp),
        "treatment": start_recommender(root, "als", tmp),
    }
    try:
        yield procs, models
    finally:
        for p in procs.values():
            p.kill()


def read_topic(kafka: KafkaBroker, topic: str) -> list[tuple[bytes, bytes]]:
    """Every (key, value) in ``topic`` up to its current end."""
    consumer = KafkaConsumer(bootstrap_servers=kafka.bootstrap, enable_auto_commit=False)
    parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
    consumer.assign(parts)
    consumer.seek_to_beginning(*parts)
    ends = consumer.end_offsets(parts)
    out: list[tuple[bytes, bytes]] = []
    deadline = time.monotonic() + 30
    while any(consumer.position(tp) < ends[tp] for tp in parts) and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            out.extend((r.key, r.value) for r in records)
    consumer.close()
    return out


def test_exposures_land_in_kafka_and_in_the_event_store(
    kafka: KafkaBroker,
    arms: tuple[dict[str, Proc], dict],
    tmp_path: Path,  # type: ignore[type-arg]
) -> None:
    procs, models = arms
    topic = kafka.create_topic(f"exposures-{int(time.time() * 1000)}")
    config = write_experiment(
        tmp_path / "e.yaml", experiment({n: p.url for n, p in procs.items()}, exposure=0.6)
    )
    router = start_router(config, tmp_path, kafka=kafka.bootstrap, topic=topic)
    served: dict[int, tuple[str, str | None, str, str]] = {}
    try:
        with requests.Session() as s:
            for user in range(1, 301):
                r = s.get(f"{router.url}/recommend/{user}", timeout=2)
                assert r.status_code == 200
                served[user] = (
                    r.headers["X-Arm"],
                    r.headers.get("X-Model-Version"),  # none on the static list
                    r.text,
                    r.headers["X-Served-By"],
                )
        wait_until(
            lambda: router.total("marquee_router_exposure_events_sent_total") == 300, timeout=30
        )
    finally:
        router.kill(15)
    records = read_topic(kafka, topic)
    assert len(records) == 300
    for key, value in records:
        event = parse(value)
        assert isinstance(event, ExposureEvent), event
        assert key == str(event.user_id).encode()
        arm, version, body, served_by = served[event.user_id]
        assert (event.arm, event.model_version, ",".join(event.items)) == (arm, version, body)
        assert event.experiment == "exp-1"
        if served_by == "static":  # an arm over budget on a loaded machine: recorded as such
            assert event.model_name is None and event.fallback is not None
        else:  # the model that answered, also after a failover to control
            assert event.model_name == models[served_by].name
            assert served_by == ("control" if arm == "unexposed" else arm) or event.fallback
    # Failover is for trouble, not the rule: two healthy arms answer nearly every request.
    assert sum(1 for *_, by in served.values() if by not in models) <= 15
    arms_seen = {parse(v).arm for _, v in records}  # type: ignore[union-attr]
    assert arms_seen == {"unexposed", "control", "treatment"}

    # Ingest stores them like every other kind.
    from services.common.store import EventStoreReader, rows_to_events
    from services.ingest.consumer import IngestService
    from services.ingest.settings import IngestSettings

    settings = IngestSettings(
        kafka_bootstrap_servers=kafka.bootstrap,
        store_path=tmp_path / "store",
        topic=topic,
        dlq_enabled=False,
        group_id=f"router-test-{topic}",
        group_instance_id=None,
        flush_interval_s=0.5,
        http_port=0,
    )
    service = IngestService(settings)
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    try:
        wait_until(
            lambda: EventStoreReader(settings.store_path).counts().get("exposure") == 300,
            timeout=120,
            what="ingest to store the exposures",
        )
    finally:
        service.stop()
        thread.join(60)
    store = EventStoreReader(settings.store_path)
    stored = [e for _, _, e in rows_to_events("exposure", store.read("exposure"))]
    assert sorted((e.user_id, e.arm, e.model_version) for e in stored) == sorted(  # type: ignore[union-attr]
        (u, arm, version) for u, (arm, version, _, _) in served.items()
    )


def test_kafka_stopped_mid_load_leaves_requests_unaffected(
    kafka: KafkaBroker,
    arms: tuple[dict[str, Proc], dict],
    tmp_path: Path,  # type: ignore[type-arg]
) -> None:
    procs, _ = arms
    topic = kafka.create_topic(f"exposures-{int(time.time() * 1000)}")
    config = write_experiment(
        tmp_path / "e.yaml", experiment({n: p.url for n, p in procs.items()}, exposure=0.5)
    )
    router = start_router(
        config,
        tmp_path,
        kafka=kafka.bootstrap,
        topic=topic,
        extra={"MARQUEE_ROUTER_EXPOSURE_BUFFER": "300", "MARQUEE_ROUTER_EXPOSURE_BATCH": "50"},
    )

    def counts() -> tuple[float, float, float, float]:
        return (
            router.total("marquee_router_requests_total", status="200"),
            router.total("marquee_router_exposure_events_sent_total"),
            router.total("marquee_router_exposure_events_dropped_total"),
            router.total("marquee_router_exposure_events_buffered"),
        )

    running = True
    try:
        load = Load(router.url, threads=4)
        try:
            time.sleep(1.5)
            kafka.stop()
            running = False
            stopped = time.monotonic()
            time.sleep(5.0)
            during = [a for a in load.answers if a.at > stopped]
        finally:
            load.finish()
        assert not load.failures, load.failures[:5]
        assert len(during) > 100, "requests kept flowing while Kafka was down"
        answered, sent, dropped, buffered = counts()
        assert answered == len(load.answers)
        assert dropped > 0, "the bounded buffer overflowed and said so"
        assert sent + dropped + buffered == answered
        kafka.start()
        running = True
        wait_until(lambda: counts()[3] == 0, timeout=90, what="the backlog to drain")
        answered, sent, dropped, _ = counts()
        assert sent + dropped == answered
        assert len(read_topic(kafka, topic)) == sent, "the sent counter is what Kafka holds"
    finally:
        router.kill(15)
        if not running:
            kafka.start()  # leave the session's broker running for later tests
