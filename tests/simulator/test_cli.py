"""``marquee sim``: subcommands, settings precedence, errors, and the API server process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from services.cli import main as marquee
from services.simulator import cli
from services.simulator.world import GroundTruth
from tests.infra import free_port

ROOT = Path(__file__).resolve().parents[2]


def test_backfill_then_truth(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = marquee(["sim", "backfill", "--days", "0.02", "--users", "2000", "--movies", "500",
                  "--out", str(tmp_path / "s.log"), "--run-dir", str(tmp_path)])  # fmt: skip
    assert rc == 0
    summary = json.loads((tmp_path / "truth" / "summary.json").read_text())
    assert summary["lines_total"] == len((tmp_path / "s.log").read_text().splitlines())
    capsys.readouterr()
    assert cli.main(["truth", "--run-dir", str(tmp_path), "--user", "5", "-k", "20"]) == 0
    top = capsys.readouterr().out.strip().split(",")
    assert top == GroundTruth.load(tmp_path / "truth").true_top_k(5, 20)


def test_environment_settings_and_flag_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MARQUEE_SIM_N_USERS", "1234")
    monkeypatch.setenv("MARQUEE_SIM_SEED", "9")
    args = cli._parser().parse_args(["backfill", "--days", "1", "--seed", "3"])
    s = cli.settings_from(args)
    assert s.n_users == 1234 and s.seed == 3


def test_bad_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["backfill", "--days", "0.01", "--users", "100", "--movies", "100"]) == 2
    assert "no output" in capsys.readouterr().err
    assert cli.main(["backfill", "--days", "0.01", "--users", "100", "--movies", "100",
                     "--out", str(tmp_path / "x"), "--target", "builtin:psychic"]) == 2  # fmt: skip
    assert cli.main(["backfill", "--days", "0.01", "--reco-share", "2", "--out", "x"]) == 2
    bad = tmp_path / "s.json"
    bad.write_text('{"typo_rate": 1}')
    assert cli.main(["backfill", "--days", "0.01", "--out", "x", "--scenario", str(bad)]) == 2
    capsys.readouterr()
    assert cli.main(["teleport"]) == 2  # one line, no usage dump
    assert capsys.readouterr().err.count("\n") == 1


def test_api_subcommand_serves_over_http(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "MARQUEE_SIM_LOG_JSON": "true"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "sim", "api", "--port", str(port),
         "--host", "127.0.0.1", "--users", "2000", "--movies", "500", "--rate-limit", "0"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                if requests.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(0.1)
        r = requests.get(f"{base}/user/7", timeout=5)
        assert r.status_code == 200 and r.json()["user_id"] == 7
        assert requests.get(f"{base}/user/999999", timeout=5).status_code == 404
        r = requests.get(f"{base}/movies?ids=a+b", timeout=5)
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
        assert "marquee_sim_api_requests_total" in requests.get(f"{base}/metrics", timeout=5).text
    finally:
        proc.terminate()
        proc.wait(timeout=20)
