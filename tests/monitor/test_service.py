"""``marquee monitor run`` as a real process: reads a real event store, serves its page and
metrics, decides, rewrites the experiment file, moves the registry and stops on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from services.common.artifacts import MANIFEST_FILE, Registry
from services.common.experiment import Status
from services.ingest.store import EventStore
from services.monitor.actions import FileConfigStore, to_yaml
from services.monitor.sources import LinesSource
from tests.infra import free_port, wait_until
from tests.monitor.simab import experiment_config, simulate
from tests.monitor.storeutil import store_table

pytestmark = pytest.mark.slow


def test_the_monitor_process_promotes_the_better_arm(tmp_path: Path) -> None:
    cfg = experiment_config({"control": 50, "treatment": 50}, policy={"min_users": 150})
    run = simulate(
        cfg, {"control": "popularity", "treatment": "oracle"}, users=2000, hours=6, seed=31
    )
    src = LinesSource.from_lines(run.stream + run.exposures)
    store = EventStore(tmp_path / "store", writer=True)
    offset = 0
    tables = {}
    for kind, table in src.tables.items():
        topic = "exposures" if kind == "exposure" else "movielog"
        tables[kind] = store_table(kind, table.to_pydict(), offset, topic=topic)
        offset += table.num_rows
    store.commit(tables, {("movielog", 0): (0, offset - 1)}, {("movielog", 0): run.end_ns})
    store.close()
    config = tmp_path / "experiment.yaml"
    config.write_text(to_yaml(cfg))
    reg = Registry(tmp_path / "models")
    for v in ("v1", "v2"):
        reg.path("treatment", v).mkdir(parents=True)
        (reg.path("treatment", v) / MANIFEST_FILE).write_text("{}")
    reg.set_channel("treatment", "stable", "v1")
    reg.set_channel("treatment", "canary", "v2")
    port = free_port()
    env = {
        **os.environ,
        "MARQUEE_MONITOR_LOG_JSON": "false",
        "MARQUEE_MONITOR_DB_URL": f"sqlite:///{tmp_path / 'h.sqlite3'}",
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "services.cli",
            "monitor",
            "run",
            "--config",
            str(config),
            "--store",
            str(tmp_path / "store"),
            "--registry",
            str(tmp_path / "models"),
            "--port",
            str(port),
            "--interval",
            "0.5",
            "--lateness",
            "0",
            "--checkpoint-dir",
            str(tmp_path / "ckpt"),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until(
            lambda: FileConfigStore(config).read().status is Status.PROMOTED,
            60,
            what="the monitor to promote",
        )
        doc = requests.get(f"{base}/api/experiment", timeout=5).json()
        assert doc["experiment"] == "exp-1"
        assert reg.channel("treatment", "stable") == "v2"
        hist = requests.get(f"{base}/api/history", timeout=5).json()
        assert hist["decisions"][-1]["action"] == "promote" or any(
            d["action"] == "promote" for d in hist["decisions"]
        )
        assert "marquee_monitor_decisions_total" in requests.get(f"{base}/metrics", timeout=5).text
        assert "<svg" in requests.get(base + "/", timeout=5).text
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out[-2000:]
