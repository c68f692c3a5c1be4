"""Real infrastructure for integration tests: Kafka (KRaft) and Prometheus on loopback.

Each is started by its script in ``scripts/`` with a port and run folder of the test session's
own, so tests never touch a broker a developer has running for the demo.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import pytest

ROOT = Path(__file__).resolve().parents[1]
IN_CI = bool(os.environ.get("CI"))


def skip_or_fail(msg: str) -> NoReturn:
    """Skip a test locally, but fail it in CI (``CI`` set), where nothing may be missing."""
    if IN_CI:
        pytest.fail(f"{msg} (CI must not skip)", pytrace=False)
    pytest.skip(msg)


def require(tool: str, why: str) -> None:
    """Skip (locally) or fail (in CI) when a tool the platform needs is absent."""
    if shutil.which(tool) is None:
        skip_or_fail(f"{tool} not installed ({why}); run 'make setup'")


def import_or_skip(module: str) -> Any:
    """``pytest.importorskip`` that fails in CI instead of skipping."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        skip_or_fail(f"cannot import {module}: {exc}; run 'make setup'")


@dataclass
class KafkaBroker:
    """A running single-node broker started by ``scripts/kafka.sh``."""

    port: int
    run_dir: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def bootstrap(self) -> str:
        """host:port of the client listener."""
        return f"127.0.0.1:{self.port}"

    def _script(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(ROOT / "scripts" / "kafka.sh"), *args],
            env=self.env,
            check=True,
            capture_output=True,
            text=True,
            timeout=180,
        )

    def start(self) -> None:
        """Start the broker (formats storage on first start)."""
        self._script("start")

    def stop(self) -> None:
        """Stop the broker gracefully."""
        self._script("stop")

    def kill(self) -> None:
        """kill -9 the broker, as a crash would."""
        pid_file = self.run_dir / "kafka.pid"
        if pid_file.exists():
            pid = int(pid_file.read_text())
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
            for _ in range(100):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)

    def create_topic(self, name: str | None = None, partitions: int = 3) -> str:
        """Create a fresh topic (a unique name unless given) and return its name."""
        from kafka.admin import KafkaAdminClient, NewTopic
        from kafka.errors import TopicAlreadyExistsError

        topic = name or f"test-{uuid.uuid4().hex[:10]}"
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=20_000)
        try:
            admin.create_topics([NewTopic(topic, partitions, 1)])
        except TopicAlreadyExistsError:
            pass
        finally:
            admin.close()
        return topic


def start_kafka(port: int | None = None) -> KafkaBroker:
    """Start a broker for the test session on ``port`` with a run folder of its own.

    ``MARQUEE_TEST_KAFKA_PORT`` (default 29092) lets parallel test sessions use separate brokers.
    """
    port = port or int(os.environ.get("MARQUEE_TEST_KAFKA_PORT", "29092"))
    require("java", "the Kafka broker is a JVM program")
    require("mvn", "Maven resolves the Kafka jars")
    run_dir = ROOT / ".run" / f"test-kafka-{port}"
    if run_dir.exists():
        shutil.rmtree(run_dir)  # a fresh log for every session: tests count exact offsets
    env = {
        **os.environ,
        "KAFKA_PORT": str(port),
        "KAFKA_RUN_DIR": str(run_dir),
        "KAFKA_TOPICS": "movielog:3 movielog-dlq:1 exposures:3",
    }
    broker = KafkaBroker(port=port, run_dir=run_dir, env=env)
    broker.start()
    return broker


@dataclass
class PrometheusServer:
    """A running Prometheus started by ``scripts/prometheus.sh``."""

    port: int
    run_dir: Path
    env: dict[str, str]

    @property
    def url(self) -> str:
        """Base URL of the web API."""
        return f"http://127.0.0.1:{self.port}"

    def query(self, promql: str) -> list[dict[str, object]]:
        """Instant query; the ``result`` list of the API's answer."""
        import requests

        r = requests.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=5)
        r.raise_for_status()
        result: list[dict[str, object]] = r.json()["data"]["result"]
        return result

    def stop(self) -> None:
        """Stop Prometheus."""
        subprocess.run(
            [str(ROOT / "scripts" / "prometheus.sh"), "stop"],
            env=self.env,
            check=False,
            capture_output=True,
            timeout=60,
        )


def start_prometheus(targets: dict[str, str], port: int = 29090) -> PrometheusServer:
    """Start Prometheus scraping ``targets`` ({job: host:port}) every second."""
    require("prometheus", "Debian package 'prometheus'")
    require("promtool", "Debian package 'prometheus'")
    run_dir = ROOT / ".run" / f"test-prometheus-{port}"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    env = {
        **os.environ,
        "PROM_PORT": str(port),
        "PROM_RUN_DIR": str(run_dir),
        "PROM_TARGETS": ",".join(f"{job}={addr}" for job, addr in targets.items()),
        "PROM_SCRAPE_INTERVAL": "1s",
    }
    subprocess.run(
        [str(ROOT / "scripts" / "prometheus.sh"), "start"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=90,
    )
    return PrometheusServer(port=port, run_dir=run_dir, env=env)


def wait_until(pred: Callable[[], Any], timeout: float, every: float = 0.1, what: str = "") -> Any:
    """Poll ``pred`` until it returns something truthy; fail after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or pred}")
        time.sleep(every)


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def metric_samples(exposition: str) -> dict[tuple[str, str], float]:
    """Samples of a Prometheus text exposition keyed by (name, label text)."""
    import re

    out: dict[tuple[str, str], float] = {}
    for line in exposition.splitlines():
        m = re.fullmatch(r"([a-z_]+)(\{.*\})? (\S+)", line)
        if m:
            out[(m[1], m[2] or "")] = float(m[3])
    return out


def metric_total(exposition: str, name: str, **labels: str) -> float:
    """Sum of ``name`` in a Prometheus text exposition over samples carrying ``labels``."""
    want = [f'{k}="{v}"' for k, v in labels.items()]
    return sum(
        v
        for (n, lbl), v in metric_samples(exposition).items()
        if n == name and all(w in lbl for w in want)
    )
