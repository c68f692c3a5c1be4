"""The monitor's page, JSON API and metrics; the page in headless Chromium (Debian's package).

``MARQUEE_UPDATE_SCREENSHOTS=1`` also writes the screenshot to docs/reports/monitor/.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.common.service import BackgroundServer
from services.monitor.actions import FileConfigStore, to_yaml
from services.monitor.app import create_app
from services.monitor.cli import main
from services.monitor.core import Monitor
from services.monitor.history import History
from services.monitor.sources import LinesSource
from tests.infra import require
from tests.monitor.simab import experiment_config, simulate

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
MIN_NS = 60 * 1_000_000_000


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Monitor, History, Path]]:
    """A monitor that has followed a small popularity-vs-oracle experiment for six hours."""
    tmp = tmp_path_factory.mktemp("monitor")
    cfg = experiment_config(
        {"control": 50, "treatment": 50}, policy={"min_users": 100000, "ramp": [0.5, 1.0]}
    )
    run = simulate(
        cfg,
        {"control": "popularity", "treatment": "blend:0.5"},
        users=1500,
        hours=6,
        seed=21,
        warmup_hours=6,
    )
    (tmp / "stream.log").write_text("\n".join(run.stream) + "\n")
    (tmp / "exposures.log").write_text("\n".join(run.exposures) + "\n")
    (tmp / "experiment.yaml").write_text(to_yaml(cfg))
    src = LinesSource([tmp / "stream.log", tmp / "exposures.log"])
    history = History(f"sqlite:///{tmp / 'h.sqlite3'}")
    history.migrate()
    mon = Monitor(
        src,
        FileConfigStore(tmp / "experiment.yaml"),
        checkpoint_dir=tmp / "ckpt",
        history=history,
        lateness_ns=MIN_NS,
        dry_run=True,
    )
    t = run.start_ns
    while t < run.end_ns:
        t += 20 * MIN_NS
        src.visible_until = t
        mon.step()
    yield mon, history, tmp
    history.close()


def test_json_api_and_metrics(running: tuple[Monitor, History, Path]) -> None:
    mon, history, _ = running
    client = create_app(None, mon, history).test_client()
    doc = client.get("/api/experiment").get_json()
    assert doc["experiment"] == "exp-1" and doc["dry_run"]
    assert {a["arm"] for a in doc["analysis"]["arms"]} == {"control", "treatment"}
    hist = client.get("/api/history?limit=5").get_json()
    assert hist["arms"] and hist["decisions"] and hist["served_quality"]
    bad = client.get("/api/history?limit=lots")
    assert bad.status_code == 400 and "limit must be an integer" in bad.get_json()["error"]
    text = client.get("/metrics").get_data(as_text=True)
    for name in (
        "marquee_monitor_arm_conversion",
        "marquee_monitor_p_value",
        "marquee_monitor_srm_p_value",
        "marquee_monitor_decision_state",
        "marquee_monitor_evaluation_lag_seconds",
        "marquee_monitor_sequential_bound",
    ):
        assert name in text
    assert client.get("/readyz").status_code == 200


def test_the_page_renders_charts_without_scripts(running: tuple[Monitor, History, Path]) -> None:
    mon, history, _ = running
    page = create_app(None, mon, history).test_client().get("/").get_data(as_text=True)
    assert "<svg" in page and "<polygon" in page and "<polyline" in page
    assert "Decision history" in page and "Sample ratio" in page and "Guardrails" in page
    assert "<script" not in page and "http://" not in page.split("</style>")[1].split("<svg")[0]


def test_the_page_in_headless_chromium(
    running: tuple[Monitor, History, Path], tmp_path: Path
) -> None:
    require("chromium", "the experiment page is checked in a real browser")
    mon, history, _ = running
    server = BackgroundServer(create_app(None, mon, history), "127.0.0.1", 0).start()
    try:
        url = f"http://127.0.0.1:{server.port}/"
        shot = tmp_path / "experiment.png"
        base = [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--user-data-dir={tmp_path / 'profile'}",
        ]
        dom = subprocess.run(
            [*base, "--dump-dom", url], capture_output=True, text=True, timeout=120, check=True
        ).stdout
        assert "Experiment exp-1" in dom and "<polyline" in dom
        subprocess.run(
            [*base, "--window-size=1100,1500", f"--screenshot={shot}", url],
            capture_output=True,
            timeout=120,
            check=True,
        )
    finally:
        server.close()
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    if os.environ.get("MARQUEE_UPDATE_SCREENSHOTS"):
        out = ROOT / "docs" / "reports" / "monitor" / "experiment.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, out)


def test_analyze_prints_the_same_numbers_as_the_live_monitor(
    running: tuple[Monitor, History, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    mon, _, tmp = running
    args = [
        "analyze",
        "--config",
        str(tmp / "experiment.yaml"),
        "--lines",
        str(tmp / "stream.log"),
        "--lines",
        str(tmp / "exposures.log"),
    ]
    assert main([*args, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    live = mon.snapshot()
    assert live is not None
    # The live monitor lags by window + lateness; offline sees the whole file.
    assert doc["analysis"]["arms"][0]["users"] >= live["analysis"]["arms"][0]["users"] > 100
    assert doc["decision"]["action"] in {"continue", "ramp"}
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "treatment vs control" in text and "decision:" in text


def test_analyze_refuses_bad_input_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("experiment: [")
    assert main(["analyze", "--config", str(bad), "--lines", str(bad)]) == 2
    assert "not valid YAML" in capsys.readouterr().err
    good = tmp_path / "good.yaml"
    good.write_text(to_yaml(experiment_config({"control": 50, "treatment": 50})))
    assert main(["analyze", "--config", str(good), "--lines", str(tmp_path / "nope")]) == 2
    assert "not found" in capsys.readouterr().err
