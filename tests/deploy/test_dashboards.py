"""Every Grafana panel's query returns data from a real Prometheus scraping the running stack:
two recommenders under gunicorn with small registered models, the router between them (its
exposure log on the test broker), ingest storing the stream (with malformed lines) and the
exposures, and the monitor judging the experiment from that store."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests

from services.common.service import CLIENT_TIME_HEADER
from tests.infra import ROOT, KafkaBroker, PrometheusServer, free_port, wait_until
from tests.router.servers import Proc, register_models, start, start_recommender, start_router

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DASHBOARDS = ROOT / "helm" / "marquee" / "files" / "grafana" / "dashboards"


# Event time of the test: requests are stamped (the router trusts the caller's clock, as with a
# fast simulated world) two hours ago onwards, so the stream after them closes their windows.
START = datetime.now(UTC).replace(tzinfo=None, microsecond=0) - timedelta(hours=2)
REQUEST_EVERY = timedelta(seconds=15)


def stream(n: int, served: dict[int, tuple[datetime, str]]) -> list[bytes]:
    """``n`` lines from an hour after START: watches and ratings, every 50th malformed; and a
    watch of the first recommended movie two minutes after every third served list."""
    start_at = START + timedelta(hours=1)
    timed = []
    for i in range(n):
        at = start_at + timedelta(seconds=i)
        ts = at.isoformat(timespec="seconds")
        if i % 50 == 49:
            timed.append((at, f"{ts},{i},GET /data/m/broken"))
        elif i % 7 == 0:
            timed.append((at, f"{ts},{100 + i % 40},GET /rate/the+matrix+1999={1 + i % 5}"))
        else:
            timed.append((at, f"{ts},{100 + i % 40},GET /data/m/the+matrix+1999/{i % 90}.mpg"))
    for user, (served_at, movie) in served.items():
        if user % 3 == 0:
            at = served_at + timedelta(minutes=2)
            timed.append(
                (at, f"{at.isoformat(timespec='seconds')},{user},GET /data/m/{movie}/0.mpg")
            )
    return [line.encode() for _, line in sorted(timed)]


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
        router = start_router(
            config, tmp_path, kafka=kafka.bootstrap, topic=exposures, workers=1,
            extra={"MARQUEE_ROUTER_TRUST_CLIENT_TIME": "true"},
        )  # fmt: skip
        procs.append(router)
        # One partition: the monitor judges up to the lowest partition head, and a partition a
        # few lines happen to miss would hold it back.
        topic = kafka.create_topic(f"movielog-{uuid.uuid4().hex[:8]}", partitions=1)
        port = free_port()
        ingest = start(
            ["ingest", "run"],
            {
                "MARQUEE_INGEST_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap,
                "MARQUEE_INGEST_STORE_PATH": str(tmp_path / "store"),
                "MARQUEE_INGEST_TOPICS": f"{topic},{exposures}",
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
        port = free_port()
        # Dry run: it judges and records but never rewrites the experiment the router reads.
        monitor = start(
            ["monitor", "run", "--config", str(config), "--store", str(tmp_path / "store"),
             "--dry-run", "--port", str(port), "--interval", "0.5", "--lateness", "0",
             "--checkpoint-dir", str(tmp_path / "monitor-state"),
             "--db", f"sqlite:///{tmp_path / 'monitor.sqlite3'}"],
            {"MARQUEE_MONITOR_LOG_JSON": "false"},
            f"http://127.0.0.1:{port}",
            tmp_path / "monitor.log",
            "/healthz",  # ready only after its first step on data: the stream comes later
        )  # fmt: skip
        procs.append(monitor)
        yield {"control": control, "treatment": treatment, "router": router, "ingest": ingest,
               "monitor": monitor, "topic": topic, "store": str(tmp_path / "store")}  # fmt: skip
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
            "monitor": address(procs["monitor"]),
        }
    )
    wait_until(
        lambda: len([r for r in prom.query("up == 1") if r["metric"]["job"] != "prometheus"]) == 5,
        60,
        every=0.5,
        what="every target scraped",
    )
    # The stream flows before the router is asked (as in a running stack): with no stream stored
    # yet, the exposures' own head would let the monitor judge them before their watches arrive.
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap)
    producer.send(str(stack["topic"]), f"{START.isoformat()},1,GET /data/m/prelude/0.mpg".encode())
    producer.flush()
    commits = Path(str(stack["store"])) / "_commits"
    wait_until(lambda: list(commits.glob("*.json")), 60, what="the first line stored")
    # Traffic after the first scrapes, so every counter has a before and an after.
    session = requests.Session()
    served: dict[int, tuple[datetime, str]] = {}
    for user in range(1, 201):
        at = START + user * REQUEST_EVERY
        stamp = str(int(at.replace(tzinfo=UTC).timestamp()) * 10**9)
        answer = session.get(
            f"{procs['router'].url}/recommend/{user}",
            headers={CLIENT_TIME_HEADER: stamp},
            timeout=5,
        )
        assert answer.status_code == 200
        served[user] = (at, answer.text.split(",")[0].strip())
    session.get(f"{procs['control'].url}/recommend/999999", timeout=5)  # a cold start
    for line in stream(1000, served):
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
    # The monitor judged real exposures from the store: users in both arms, some converted.
    users = {
        r["metric"]["arm"]: float(r["value"][1]) for r in prom.query("marquee_monitor_arm_users")
    }
    assert users.get("control", 0) > 0 and users.get("treatment", 0) > 0, users
    converted = prom.query('sum(marquee_monitor_arm_conversion{bound="estimate"}) > 0')
    assert converted, "no arm converted a user"
