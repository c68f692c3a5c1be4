"""Every Grafana panel's query returns data from a real Prometheus scraping the running stack:
two recommenders under gunicorn with small registered models, the router between them (its
exposure log on the test broker), and ingest consuming a stream with malformed lines."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests

from tests.infra import ROOT, KafkaBroker, PrometheusServer, free_port, wait_until
from tests.router.servers import Proc, register_models, start, start_recommender, start_router

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DASHBOARDS = ROOT / "helm" / "marquee" / "files" / "grafana" / "dashboards"


def stream(n: int) -> list[bytes]:
    """``n`` lines of the last hour: watches and ratings, and every 50th malformed."""
    start_at = datetime.now(UTC).replace(tzinfo=None) - timedelta(hours=1)
    lines = []
    for i in range(n):
        ts = (start_at + timedelta(seconds=i)).isoformat(timespec="seconds")
        if i % 50 == 49:
            lines.append(f"{ts},{i},GET /data/m/broken".encode())
        elif i % 7 == 0:
            lines.append(f"{ts},{100 + i % 40},GET /rate/the+matrix+1999={1 + i % 5}".encode())
        else:
            lines.append(f"{ts},{100 + i % 40},GET /data/m/the+matrix+1999/{i % 90}.mpg".encode())
    return lines


@pytest.fixture
def stack(tmp_path: Path, kafka: KafkaBroker) -> Iterator[dict[str, Proc | str]]:
    """The running services, their topics, stopped afterwards."""
    procs: list[Proc] = []
    try:
        root = tmp_path / "registry"
        register_models(root)
        control = start_recommender(root, "svd", tmp_path)
        procs.append(control)
        treatment = start_recommender(root, "als", tmp_path)
        procs.append(treatment)
        config = tmp_path / "experiment.yaml"
        config.write_text(
            "experiment: dash\nsalt: dash\nmode: split\nstatus: running\nexposure: 1.0\n"
            "control: control\narms:\n"
            f"  - {{name: control, url: '{control.url}', weight: 50, model: svd}}\n"
            f"  - {{name: treatment, url: '{treatment.url}', weight: 50, model: als}}\n"
            "fallback: [the+matrix+1999]\n"
        )
        exposures = kafka.create_topic(f"exposures-{uuid.uuid4().hex[:8]}")
        router = start_router(config, tmp_path, kafka=kafka.bootstrap, topic=exposures, workers=1)
        procs.append(router)
        topic = kafka.create_topic(f"movielog-{uuid.uuid4().hex[:8]}")
        port = free_port()
        ingest = start(
            ["ingest", "run"],
            {
                "MARQUEE_INGEST_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap,
                "MARQUEE_INGEST_STORE_PATH": str(tmp_path / "store"),
                "MARQUEE_INGEST_TOPICS": topic,
                "MARQUEE_INGEST_GROUP_ID": f"dash-{topic}",
                "MARQUEE_INGEST_DLQ_ENABLED": "false",
                "MARQUEE_INGEST_FLUSH_INTERVAL_S": "1",
                "MARQUEE_INGEST_DQ_WINDOW_LINES": "200",
                "MARQUEE_INGEST_DQ_MIN_LINES": "10",
                "MARQUEE_INGEST_HTTP_PORT": str(port),
            },
            f"http://127.0.0.1:{port}",
            tmp_path / "ingest.log",
            "/readyz",
        )
        procs.append(ingest)
        yield {"control": control, "treatment": treatment, "router": router, "ingest": ingest,
               "topic": topic}  # fmt: skip
    finally:
        for p in procs:
            p.kill()


def address(proc: Proc) -> str:
    """host:port of a server."""
    return proc.url.removeprefix("http://")


def test_every_panel_query_returns_data(
    stack: dict[str, Proc | str],
    kafka: KafkaBroker,
    prometheus_factory: Callable[[dict[str, str]], PrometheusServer],
) -> None:
    from kafka import KafkaProducer

    procs = {k: v for k, v in stack.items() if isinstance(v, Proc)}
    prom = prometheus_factory(
        {
            "recommender": address(procs["control"]),
            "recommender-als": address(procs["treatment"]),
            "router": address(procs["router"]),
            "ingest": address(procs["ingest"]),
        }
    )
    wait_until(
        lambda: len([r for r in prom.query("up == 1") if r["metric"]["job"] != "prometheus"]) == 4,
        60,
        every=0.5,
        what="every target scraped",
    )
    # Traffic after the first scrapes, so every counter has a before and an after.
    session = requests.Session()
    for user in range(1, 201):
        assert session.get(f"{procs['router'].url}/recommend/{user}", timeout=5).status_code == 200
    session.get(f"{procs['control'].url}/recommend/999999", timeout=5)  # a cold start
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap)
    for line in stream(1000):
        producer.send(str(stack["topic"]), line)
    producer.flush()
    producer.close()

    panels = [
        (path.stem, panel["title"], target["expr"])
        for path in sorted(DASHBOARDS.glob("*.json"))
        for panel in json.loads(path.read_text())["panels"]
        for target in panel["targets"]
    ]
    assert len(panels) >= 30
    missing = {(board, title): expr for board, title, expr in panels}
    deadline = time.monotonic() + 90
    while missing and time.monotonic() < deadline:
        for key, expr in list(missing.items()):
            if prom.query(expr):
                del missing[key]
        time.sleep(1)
    assert not missing, "panels without data:\n" + "\n".join(
        f"  {board} / {title}: {expr}" for (board, title), expr in missing.items()
    )
