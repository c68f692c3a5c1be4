"""Real processes for router integration tests: recommenders and the router under gunicorn."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from services.common.artifacts import Manifest
from services.recommender.synthetic import write_synthetic_model
from tests.infra import free_port, metric_total

SIZES = {"n_users": 2000, "n_items": 600, "n_factors": 16, "seen_per_user": 10}


@dataclass
class Proc:
    """A server process started in its own session (so its workers die with it)."""

    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def total(self, name: str, **labels: str) -> float:
        """Sum of ``name`` on /metrics over samples whose labels include ``labels``."""
        text = requests.get(f"{self.url}/metrics", timeout=5).text
        return metric_total(text, name, **labels)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group (master and workers)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(20)


def start(argv: list[str], env: dict[str, str], url: str, log: Path, ready: str) -> Proc:
    """Start ``marquee <argv>`` and wait until ``<url><ready>`` answers 200."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", *argv],
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 60
    while True:
        try:
            if requests.get(f"{url}{ready}", timeout=1).status_code == 200:
                return Proc(proc, url, log)
        except requests.ConnectionError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"{argv[0]} did not become ready:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)


def register_models(root: Path) -> dict[str, Manifest]:
    """Two different registered models: ``svd`` (control) and ``als`` (treatment)."""
    return {
        "control": write_synthetic_model(root, name="svd", family="svd", seed=1, **SIZES),
        "treatment": write_synthetic_model(root, name="als", family="als", seed=2, **SIZES),
    }


def start_recommender(root: Path, model: str, tmp: Path, workers: int = 1) -> Proc:
    """``marquee serve`` for ``model`` on a free loopback port."""
    port = free_port()
    env = {
        "MARQUEE_RECOMMENDER_REGISTRY_ROOT": str(root),
        "MARQUEE_RECOMMENDER_MODEL_NAME": model,
        "MARQUEE_RECOMMENDER_WORKERS": str(workers),
        "MARQUEE_RECOMMENDER_THREADS": "4",
        "MARQUEE_RECOMMENDER_ACCESS_LOG": "false",
        "MARQUEE_RECOMMENDER_METRICS_DIR": str(tmp / f"metrics-{model}-{port}"),
    }
    url = f"http://127.0.0.1:{port}"
    argv = ["serve", "--bind", f"127.0.0.1:{port}"]
    return start(argv, env, url, tmp / f"reco-{model}-{port}.log", "/readyz")


def start_router(config: Path, tmp: Path, *, kafka: str | None = None, topic: str = "exposures",
                 workers: int = 2, extra: dict[str, str] | None = None) -> Proc:  # fmt: skip
    """``marquee route serve`` on ``config`` on a free loopback port."""
    port = free_port()
    env = {
        "MARQUEE_ROUTER_CONFIG_PATH": str(config),
        "MARQUEE_ROUTER_WORKERS": str(workers),
        "MARQUEE_ROUTER_RELOAD_INTERVAL_S": "0.2",
        "MARQUEE_ROUTER_ACCESS_LOG": "false",
        "MARQUEE_ROUTER_METRICS_DIR": str(tmp / f"metrics-router-{port}"),
        "MARQUEE_ROUTER_EXPOSURE_TOPIC": topic,
        "MARQUEE_ROUTER_GRACEFUL_TIMEOUT_S": "5",
        **(extra or {}),
    }
    if kafka:
        env["MARQUEE_ROUTER_KAFKA_BOOTSTRAP_SERVERS"] = kafka
    url = f"http://127.0.0.1:{port}"
    argv = ["route", "serve", "--bind", f"127.0.0.1:{port}"]
    return start(argv, env, url, tmp / f"router-{port}.log", "/readyz")


@dataclass
class Answer:
    """One client-side observation."""

    user: int
    status: int
    seconds: float
    headers: dict[str, str]
    body: str
    at: float
    """time.monotonic() when the answer arrived."""


@dataclass
class Load:
    """Threads requesting users until stopped, keeping every answer and every failure."""

    url: str
    threads: int = 6
    users: range = range(1, 2001)
    timeout_s: float = 0.6
    answers: list[Answer] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.stop = threading.Event()
        self.pool = ThreadPoolExecutor(self.threads)
        self.futures = [self.pool.submit(self._run, i) for i in range(self.threads)]

    def _run(self, seed: int) -> None:
        import random

        rng = random.Random(seed)
        with requests.Session() as s:
            while not self.stop.is_set():
                user = rng.choice(self.users)
                t = time.perf_counter()
                try:
                    r = s.get(f"{self.url}/recommend/{user}", timeout=self.timeout_s)
                except requests.RequestException as exc:
                    self.failures.append(f"{type(exc).__name__}: {exc}")
                    continue
                seconds = time.perf_counter() - t
                if r.status_code != 200 or not r.text:
                    self.failures.append(f"HTTP {r.status_code}: {r.text[:100]}")
                    continue
                self.answers.append(
                    Answer(user, r.status_code, seconds, dict(r.headers), r.text, time.monotonic())
                )

    def finish(self) -> None:
        """Stop the threads and wait for them."""
        self.stop.set()
        for f in self.futures:
            f.result()
        self.pool.shutdown()

    def arms(self) -> Counter[str]:
        """Answers per X-Arm."""
        return Counter(a.headers["X-Arm"] for a in self.answers)
