"""The whole path on real parts: simulator → Kafka → ingest → snapshot → dvc repro → recommender.

Small world, real broker, real subprocesses where users run them: what ``make demo`` does at
full size, asserted.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml

from services.common.artifacts import Registry
from services.common.events import is_movie_id
from services.common.snapshot import read_snapshot
from services.ingest.consumer import IngestService
from services.ingest.settings import IngestSettings
from services.ingest.store import EventStore
from services.recommender.app import create_app, runtime_of
from services.recommender.settings import RecommenderSettings
from tests.infra import ROOT, KafkaBroker, free_port
from tests.trainer.dvcrepo import DVC, pipeline_copy, run

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MARQUEE = [sys.executable, "-m", "services.cli"]
WORLD = ["--seed", "7", "--users", "3000", "--movies", "400"]


def _wait(pred: object, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with contextlib.suppress(requests.RequestException):
            if pred():  # type: ignore[operator]
                return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def user_api() -> Iterator[str]:
    """The simulator's user/movie API for the same world, on loopback."""
    port = free_port()
    proc = subprocess.Popen(
        [*MARQUEE, "sim", "api", *WORLD, "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(lambda: requests.get(f"{url}/readyz", timeout=1).ok, 60, "the simulator API")
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


def test_stream_to_served_recommendations(
    kafka: KafkaBroker, topic: str, tmp_path: Path, user_api: str
) -> None:
    # 1. Half a day of history, with malformed lines, to real Kafka.
    subprocess.run(
        [*MARQUEE, "sim", "backfill", "--days", "0.5", *WORLD, "--kafka", kafka.bootstrap,
         "--topic", topic, "--run-dir", str(tmp_path / "sim"), "--malformed-rate", "0.005",
         "--target", "builtin:popularity"],
        check=True,
        capture_output=True,
        timeout=300,
    )  # fmt: skip
    from kafka import KafkaConsumer, TopicPartition

    probe = KafkaConsumer(bootstrap_servers=kafka.bootstrap)
    ends = probe.end_offsets([TopicPartition(topic, p) for p in range(3)])
    probe.close()
    produced = sum(ends.values())
    assert produced > 10_000

    # 2. Ingest consumes every line exactly once, quarantining the malformed ones.
    settings = IngestSettings(
        kafka_bootstrap_servers=kafka.bootstrap,
        store_path=tmp_path / "store",
        # The default set-up: the stream and the router's exposures into one store.
        topics=(topic, "exposures"),
        dlq_topic="movielog-dlq",
        group_id=f"e2e-{topic}",
        group_instance_id=None,
        flush_interval_s=0.5,
        enrich_url=user_api,
    )
    service = IngestService(settings)
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    try:
        offsets = {tp.partition: off for tp, off in ends.items()}
        _wait(
            lambda: EventStore(settings.store_path).topic_offsets(topic) == offsets, 180, "ingest"
        )
    finally:
        service.stop()
        thread.join(60)
    store = EventStore(settings.store_path)
    rows = store.counts()
    stream_rows = sum(n for kind, n in rows.items() if kind != "exposure")
    assert stream_rows == produced  # every line stored once: as an event or quarantined
    assert rows["quarantine"] > 0 and rows["watch"] > 0 and rows["recommendation"] > 0

    # 3. A snapshot, enriched from the simulator's API, in a fresh copy of the DVC pipeline.
    snapshot = tmp_path / "snap" / "2026-03-02T12"
    subprocess.run(
        [*MARQUEE, "ingest", "snapshot", "--until", "2026-03-02T12:00:00", "--out",
         str(snapshot), "--store", str(settings.store_path), "--enrich-url", user_api],
        check=True,
        capture_output=True,
        timeout=300,
        env={**os.environ, "MARQUEE_INGEST_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap},
    )  # fmt: skip
    snap = read_snapshot(snapshot)
    assert snap.interactions.num_rows > 1000
    assert snap.users.column("age").null_count < snap.users.num_rows  # enrichment arrived

    repo = tmp_path / "repo"
    env = pipeline_copy(repo, snapshot)
    run([str(DVC), "repro"], repo, env)
    registry = Registry(repo / "models")
    families = yaml.safe_load((ROOT / "params.yaml").read_text())["families"]
    assert registry.names() == sorted(families)  # every family the pipeline trains
    manifest = registry.load("als", "canary").manifest
    assert manifest.snapshot["content_hash"] == snap.content_hash

    # 4. The recommender serves the registered model with provenance.
    app = create_app(
        RecommenderSettings(registry_root=repo / "models", model_name="als", model_ref="canary")
    )
    try:
        client = app.test_client()
        assert client.get("/readyz").status_code == 200
        user = snap.interactions.column("user_id")[0].as_py()
        answer = client.get(f"/recommend/{user}")
        assert answer.status_code == 200
        assert answer.headers["X-Model-Version"] == manifest.version
        ids = answer.get_data(as_text=True).split(",")
        assert len(ids) == 20 and len(set(ids)) == 20 and all(map(is_movie_id, ids))
        watched = {
            m
            for u, m in zip(
                snap.interactions.column("user_id").to_pylist(),
                snap.interactions.column("movie_id").to_pylist(),
                strict=True,
            )
            if u == user
        }
        assert not watched & set(ids)
    finally:
        runtime_of(app).stop()
