"""The whole stack of ``make demo`` / ``make up``, scaled down: Kafka, the simulator's API,
backfill, ingest of both topics, training, two recommenders serving two registered models, the
router, the monitor and Prometheus come up; live traffic through the router leaves exposures in
the store; the monitor records a decision; ``down`` leaves no process behind."""

from __future__ import annotations

import json
import random
import socket
from pathlib import Path

import pytest
import requests

from scripts import demo
from scripts.stack import Ports, Stack, group_members
from services.common.store import EventStoreReader
from tests.infra import require

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SERVICES = {"sim-api", "ingest", "recommender-stable", "recommender-canary", "router", "monitor"}


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_range(n: int = 10) -> int:
    """The first of ``n`` consecutive free loopback ports."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(32_000, 60_000)
        if all(_free(base + i) for i in range(n)):
            return base
    raise RuntimeError("no free port range")


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_the_stack_runs_an_experiment_and_down_leaves_nothing(tmp_path: Path) -> None:
    require("java", "Kafka runs on the JVM")
    require("prometheus", "the stack's Prometheus")
    base = free_port_range()
    ports = Ports.from_base(base)
    run = tmp_path / "run"
    argv = [
        "--users", "2000", "--movies", "500", "--days", "0.5", "--speed", "300",
        "--max-live-seconds", "60", "--truth-hours", "0.5", "--min-users", "100",
        "--max-users", "1500", "--run-dir", str(run), "--port-base", str(base), "--keep",
    ]  # fmt: skip
    recorded: dict[str, dict[str, int]] = {}
    try:
        assert demo.main(argv) == 0
        stack = Stack(run, ports)
        recorded = stack.procs.recorded()
        # Up: every service is running and answers; Prometheus scrapes all of them.
        assert set(recorded) == SERVICES, recorded
        assert all(stack.procs.alive(name) for name in recorded)
        for port in (ports.sim_api, ports.ingest, ports.stable, ports.canary, ports.router):
            assert requests.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200
        assert requests.get(f"http://127.0.0.1:{ports.monitor}/readyz", timeout=5).ok
        summary = json.loads((run / "summary.json").read_text())
        assert summary["prometheus"]["targets"] == 7  # six services and Prometheus itself
        # The router's exposures went through Kafka and ingest into the store.
        arms = EventStoreReader(run / "store").read("exposure")["arm"].to_pylist()
        # Once the monitor promotes, everyone is served by the winner, labelled unexposed.
        assert {"control", "treatment"} <= set(arms) <= {"control", "treatment", "unexposed"}
        assert sum(a != "unexposed" for a in arms) > 50
        # The two arms served two different registered models.
        models = {summary["arms"]["control"], summary["arms"]["treatment"]}
        assert len(models) == 2
        # The monitor evaluated and recorded at least one decision.
        history = requests.get(f"http://127.0.0.1:{ports.monitor}/api/history", timeout=5)
        assert history.json()["decisions"], history.text[:500]
        assert summary["truth"]["verdict"] in ("treatment", "control", "none")
        # The report's lift is the treatment's (the best on validation) over popularity.
        lift = summary["offline_lift"]
        assert lift["model"] == summary["arms"]["treatment"] and lift["baseline"] == "popularity"
        assert lift["val_lift"] is not None and lift["test_lift"] is not None
        if summary["arms"]["control"] == "popularity":
            online = summary["popularity_online"]
            rates = [online[k] for k in ("popularity", "served", "oracle")]
            assert all(0 <= r <= 1 for r in rates), online
    finally:
        Stack(run, ports).down()
    # Down: no process of the stack is left, nor Kafka or Prometheus; again is a no-op.
    assert recorded
    assert all(group_members(int(e["pid"])) == [] for e in recorded.values())
    assert not (run / "kafka" / "kafka.pid").exists()
    assert not (run / "prometheus" / "prometheus.pid").exists()
    assert not any(_listening(p) for p in vars(ports).values())
    assert Stack(run, ports).down() == []
