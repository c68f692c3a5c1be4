"""The real server: gunicorn with the repo's config on loopback, hot swaps under load."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from services.common.artifacts import Manifest, Registry
from services.recommender.synthetic import movie_id, write_synthetic_model
from tests.infra import metric_samples, metric_total, wait_until
from tests.recommender.test_model import tamper

pytestmark = pytest.mark.integration

SIZES = {"n_users": 2000, "n_items": 3000, "n_factors": 32, "seen_per_user": 20}
VALID_IDS = {movie_id(i) for i in range(SIZES["n_items"])}
PORTS = range(18400, 18450)


def free_port() -> int:
    """A free loopback port in this service's test range."""
    for port in PORTS:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 18400-18449")


@dataclass
class Server:
    """A gunicorn recommender started by ``marquee serve``."""

    proc: subprocess.Popen[bytes]
    url: str
    root: Path
    v1: Manifest
    log: Path
    env: dict[str, str]

    def metrics(self) -> dict[tuple[str, str], float]:
        """Aggregated /metrics samples keyed by (name, label text)."""
        return metric_samples(requests.get(f"{self.url}/metrics", timeout=5).text)

    def total(self, name: str, **labels: str) -> float:
        """Sum of ``name`` on /metrics over samples whose labels include ``labels``."""
        text = requests.get(f"{self.url}/metrics", timeout=5).text
        return metric_total(text, name, **labels)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Two gthread workers with preload, polling the channel every 0.1 s."""
    tmp = tmp_path_factory.mktemp("recommender-gunicorn")
    root = tmp / "registry"
    v1 = write_synthetic_model(root, seed=1, **SIZES)
    port = free_port()
    env = {
        **os.environ,
        "MARQUEE_RECOMMENDER_REGISTRY_ROOT": str(root),
        "MARQUEE_RECOMMENDER_MODEL_NAME": "synthetic",
        "MARQUEE_RECOMMENDER_POLL_INTERVAL_S": "0.1",
        "MARQUEE_RECOMMENDER_LOAD_RETRY_S": "3600",
        "MARQUEE_RECOMMENDER_WORKERS": "2",
        "MARQUEE_RECOMMENDER_THREADS": "4",
        "MARQUEE_RECOMMENDER_METRICS_DIR": str(tmp / "metrics"),
        "MARQUEE_RECOMMENDER_GRACEFUL_TIMEOUT_S": "5",
    }
    log = tmp / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "serve", "--bind", f"127.0.0.1:{port}"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if requests.get(f"{url}/readyz", timeout=1).status_code == 200:
                break
        except requests.ConnectionError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"server did not become ready:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)
    srv = Server(proc=proc, url=url, root=root, v1=v1, log=log, env=env)
    # /readyz answers from the first worker up; wait for the second to publish its model too.
    wait_until(lambda: srv.total("marquee_recommender_model_workers") == 2, timeout=30, every=0.05)
    yield srv
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def check_answer(resp: requests.Response) -> str:
    """Assert the contract on one HTTP answer; return the serving model version."""
    assert resp.status_code == 200, resp.text
    assert resp.headers["Content-Type"].startswith("text/plain")
    text = resp.text
    assert text and not re.search(r"\s", text)
    ids = text.split(",")
    assert len(ids) == len(set(ids)) <= 20
    assert set(ids) <= VALID_IDS
    return resp.headers["X-Model-Version"]


def test_contract_and_aggregated_metrics(server: Server) -> None:
    before = server.total("marquee_recommender_requests_total", status="200")
    with requests.Session() as s:
        for uid in (1, 2, 1999, 50_000):
            assert (
                check_answer(s.get(f"{server.url}/recommend/{uid}", timeout=2)) == server.v1.version
            )
        bad = s.get(f"{server.url}/recommend/12abc", timeout=2)
        assert bad.status_code == 400 and "\n" not in bad.text
        assert s.get(f"{server.url}/nope", timeout=2).status_code == 404
        for uid in range(100, 140):  # enough to reach both workers
            check_answer(s.get(f"{server.url}/recommend/{uid}", timeout=2))
    assert server.total("marquee_recommender_requests_total", status="200") - before == 44
    assert server.total("marquee_recommender_model_workers", model_version=server.v1.version) == 2
    info = [lbl for (n, lbl) in server.metrics() if n == "marquee_recommender_model_info"]
    assert len(info) == 1 and "pid" not in info[0], "one model_info series, not one per worker"


def test_a_second_server_never_touches_the_first_ones_metrics(
    server: Server, tmp_path: Path
) -> None:
    busy_port = server.url.rsplit(":", 1)[1]
    shared = server.env["MARQUEE_RECOMMENDER_METRICS_DIR"]
    version = {"model_version": server.v1.version}
    name = "marquee_recommender_request_duration_seconds_count"
    before = server.total(name, **version)
    cases = [
        (f"127.0.0.1:{busy_port}", shared, "Address already in use"),  # the run
        (f"127.0.0.1:{busy_port}", str(tmp_path / "own"), "Address already in use"),
        (f"127.0.0.1:{free_port()}", shared, "in use by a running server"),
    ]
    for bind, metrics_dir, why in cases:
        second = subprocess.run(
            [sys.executable, "-m", "services.cli", "serve", "--bind", bind,
             "--metrics-dir", metrics_dir],
            env=server.env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert second.returncode != 0
        assert why in second.stderr and "Traceback" not in second.stderr, second.stderr
    assert not (tmp_path / "own").exists(), "a server that cannot bind touches nothing"
    with requests.Session() as s:
        for uid in range(200, 230):
            check_answer(s.get(f"{server.url}/recommend/{uid}", timeout=2))
    assert server.total(name, **version) - before == 30, "the live server's metrics still count"


def _children(pid: int) -> set[int]:
    """Process ids whose parent is ``pid`` (the gunicorn workers of a master)."""
    out = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.add(int(stat.parent.name))
    return out


def test_worker_restart_does_not_multiply_model_info(server: Server) -> None:
    workers = _children(server.proc.pid)
    assert len(workers) == 2
    os.kill(min(workers), signal.SIGKILL)
    wait_until(
        lambda: len(_children(server.proc.pid) - workers) == 1
        and server.total("marquee_recommender_model_workers") == 2,
        timeout=30,
        every=0.05,
    )
    info = "marquee_recommender_model_info"
    series = [(lbl, v) for (n, lbl), v in server.metrics().items() if n == info]
    assert len(series) == 1 and series[0][1] == 1, series
    assert server.total("marquee_recommender_model_workers") == 2


class Load:
    """Threads requesting random users until stopped, counting versions and failures."""

    def __init__(self, url: str, threads: int = 8) -> None:
        self.url = url
        self.stop = threading.Event()
        self.versions: Counter[str] = Counter()
        self.timeline: list[tuple[float, str]] = []
        self.failures: list[str] = []
        self.pool = ThreadPoolExecutor(threads)
        self.futures = [self.pool.submit(self._run, i) for i in range(threads)]

    def _run(self, seed: int) -> None:
        import random

        rng = random.Random(seed)
        with requests.Session() as s:
            while not self.stop.is_set():
                uid = rng.randint(1, SIZES["n_users"] + 500)
                try:
                    version = check_answer(s.get(f"{self.url}/recommend/{uid}", timeout=2))
                except (AssertionError, requests.RequestException) as exc:
                    self.failures.append(f"{type(exc).__name__}: {exc}")
                    continue
                self.versions[version] += 1
                self.timeline.append((time.monotonic(), version))

    def finish(self) -> None:
        """Stop the threads and wait for them."""
        self.stop.set()
        for f in self.futures:
            f.result()
        self.pool.shutdown()

    def since(self, t: float) -> Counter[str]:
        """Versions answered after monotonic time ``t``."""
        return Counter(v for when, v in list(self.timeline) if when >= t)


def test_hot_swap_under_load_then_tampered_artifact_refused(server: Server) -> None:
    registry = Registry(server.root)
    failures_before = server.total("marquee_recommender_model_load_failures_total")
    load = Load(server.url)
    try:
        time.sleep(0.7)
        v2 = write_synthetic_model(server.root, seed=2, **SIZES)  # registers and flips stable
        flipped = time.monotonic()
        wait_until(
            lambda: server.total("marquee_recommender_model_workers", model_version=v2.version)
            == 2,
            timeout=15,
            every=0.05,
        )
        swapped = time.monotonic()
        time.sleep(0.7)
        # (a grace of 0.3 s: a request that read v1 just before the swap may still be finishing)
        assert set(load.since(swapped + 0.3)) == {v2.version}, "every worker serves v2 now"

        bad = write_synthetic_model(server.root, seed=3, channel=None, **SIZES)
        tamper(server.root, bad.version)
        registry.set_channel("synthetic", "stable", bad.version)
        wait_until(
            lambda: server.total("marquee_recommender_model_load_failures_total") - failures_before
            == 2,
            timeout=15,
            every=0.05,
        )
        refused = time.monotonic()
        time.sleep(0.5)
    finally:
        load.finish()
    assert not load.failures, load.failures[:5]
    assert load.versions[server.v1.version] > 10
    assert load.versions[v2.version] > 10
    assert bad.version not in load.versions
    assert set(load.since(refused)) == {v2.version}, "the old model keeps serving"
    assert (
        server.total("marquee_recommender_model_load_failures_total", reason="verification")
        - failures_before
        == 2
    )
    assert flipped < swapped
    log = server.log.read_text()
    assert "model load failed; keeping the current model" in log
    assert "sha256 mismatch" in log


def test_sigterm_drains_and_exits_cleanly(server: Server) -> None:
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(15) == 0
