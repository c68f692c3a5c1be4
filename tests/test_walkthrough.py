"""A new user's first hour, scripted: train ML-100K → register → serve → promote → simulate →
evaluate, with the installed ``marquee`` command in a folder outside the repository.

Nothing is copied from the repository: the only link to it is the console script.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.infra import free_port, wait_until

MARQUEE = Path(sys.executable).with_name("marquee")
REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def _env(home: Path) -> dict[str, str]:
    """The caller's environment without any MARQUEE_* setting: defaults only, as on a fresh box."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MARQUEE_")}
    return {**env, "HOME": str(home), "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}


def marquee(cwd: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the installed ``marquee`` in ``cwd``; fail with its stderr when it fails."""
    done = subprocess.run(
        [str(MARQUEE), *args],
        cwd=cwd,
        env=_env(cwd),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, f"marquee {' '.join(args)} -> {done.returncode}\n{done.stderr}"
    return done


def test_new_user_walkthrough(ml100k: str, tmp_path: Path) -> None:
    assert MARQUEE.is_file(), f"the console script is not installed at {MARQUEE}"
    here = tmp_path / "fresh"
    here.mkdir()
    assert not (here / "params.yaml").exists() and REPO not in here.parents

    assert marquee(here, "--version").stdout.startswith("marquee ")
    # 1. train and register: the project's params.yaml is used, and said so
    trained = marquee(here, "train", "--movielens", ml100k, "--register", "canary",
                      "--registry", "models", "--reports", "reports", "--json",
                      "--no-surprise-protocol", "--knn-k", "")  # fmt: skip
    assert f"parameters from {REPO / 'params.yaml'}" in trained.stderr
    summary = json.loads(trained.stdout)
    best = summary["best_on_validation"]
    assert best in summary["models"] and (here / "reports" / "report.md").is_file()
    assert summary["registered"][best]["channel"] == "canary"
    shown = json.loads(
        marquee(here, "registry", "show", best, "canary", "--registry", "models").stdout
    )
    # the symptom of issue 10 item 2: outside the repo it trained on defaults (train only, 751)
    assert shown["snapshot"]["fit_on"] == "all" and shown["snapshot"]["row_counts"]["users"] == 943
    listed = json.loads(marquee(here, "registry", "list", "--registry", "models", "--json").stdout)
    assert set(listed) == set(summary["models"])

    # 2. serve the best model's stable channel, which is empty until promoted (--wait)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [
            str(MARQUEE),
            "serve",
            "--registry",
            "models",
            "--model",
            best,
            "--ref",
            "stable",
            "--wait",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
            "--threads",
            "4",
            "--poll-interval",
            "0.2",
            "--metrics-dir",
            str(here / "prom"),
        ],
        cwd=here,
        env=_env(here),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:

        def status(path: str) -> int | None:
            try:
                return requests.get(url + path, timeout=2).status_code
            except requests.ConnectionError:
                assert server.poll() is None, server.stderr.read() if server.stderr else ""
                return None

        wait_until(lambda: status("/healthz") == 200, 30, what="the server to start")
        assert status("/readyz") == 503  # nothing on stable yet

        # 3. promote canary → stable; the server picks it up without a restart
        promoted = json.loads(marquee(here, "registry", "promote", best, "--channel", "stable",
                                      "--registry", "models").stdout)  # fmt: skip
        assert promoted == {"name": best, "channel": "stable", "version": shown["version"]}
        wait_until(lambda: status("/readyz") == 200, 30, what="the promoted model to load")
        resp = requests.get(f"{url}/recommend/1", timeout=5)
        assert resp.status_code == 200 and len(resp.text.split(",")) == 20

        # 4. simulate ML-100K's users against it for a few seconds, saving the stream
        marquee(here, "sim", "live", "--target", url, "--catalog", f"movielens:{ml100k}",
                "--users", "943", "--duration", "6", "--warmup-hours", "0.5",
                "--reco-share", "1", "--out", "stream.log", "--run-dir", "run")  # fmt: skip
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)

    # 5. judge the saved stream: the calls reached the server and were answered
    report = json.loads(marquee(here, "sim", "evaluate", "stream.log", "--json").stdout)
    assert report["requests"] > 0, report
    assert report["requests_by_status"].get("200", 0) == report["requests"], report
    assert "watch_rate_15_min" in report
