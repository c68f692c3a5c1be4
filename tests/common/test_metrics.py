"""Prometheus helpers: multiprocess aggregation as under gunicorn, and a real Prometheus scrape."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from tests.infra import PrometheusServer, free_port

WORKER = textwrap.dedent(
    """
    from prometheus_client import Counter
    c = Counter("marquee_test_requests", "requests", ["arm"])
    c.labels(arm="control").inc({n})
    """
)


def test_multiprocess_exposition_sums_workers(tmp_path: Path) -> None:
    """Each worker writes its own file; /metrics must show the sum, as under gunicorn."""
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    for n in (3, 4):
        subprocess.run([sys.executable, "-c", WORKER.format(n=n)], env=env, check=True)
    code = (
        "from services.common.metrics import exposition; "
        "body, ctype = exposition(); print(ctype); print(body.decode())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True
    ).stdout
    assert 'marquee_test_requests_total{arm="control"} 7.0' in out
    assert out.startswith("text/plain")


EXPORTER = textwrap.dedent(
    """
    import sys, time
    from prometheus_client import Counter, start_http_server
    c = Counter("marquee_test_events", "events", ["kind"])
    c.labels(kind="watch").inc(42)
    start_http_server(int(sys.argv[1]), addr="127.0.0.1")
    time.sleep(120)
    """
)


@pytest.mark.integration
def test_real_prometheus_scrapes_a_marquee_exporter(
    prometheus_factory: Callable[[dict[str, str]], PrometheusServer],
) -> None:
    port = free_port()
    exporter = subprocess.Popen([sys.executable, "-c", EXPORTER, str(port)])
    try:
        for _ in range(50):
            try:
                requests.get(f"http://127.0.0.1:{port}/metrics", timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        prom = prometheus_factory({"exporter": f"127.0.0.1:{port}"})
        deadline = time.monotonic() + 45
        result: list[dict[str, object]] = []
        while time.monotonic() < deadline:
            result = prom.query('marquee_test_events_total{job="exporter",kind="watch"}')
            if result:
                break
            time.sleep(0.5)
        assert result, "Prometheus never scraped the exporter"
        value = result[0]["value"]
        assert isinstance(value, list) and float(value[1]) == 42.0
        labels = result[0]["metric"]
        assert isinstance(labels, dict) and labels["service"] == "exporter"
    finally:
        exporter.kill()


HOLDER = textwrap.dedent(
    """
    import sys, time
    from services.common.metrics import prepare_multiproc_dir
    prepare_multiproc_dir(sys.argv[1])
    open(sys.argv[1] + "/counter_1.db", "wb").write(b"live")
    print("claimed", flush=True)
    time.sleep(60)
    """
)


def test_a_metrics_folder_in_use_is_never_emptied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.common.metrics import MULTIPROC_ENV, MetricsDirInUseError, prepare_multiproc_dir

    monkeypatch.setenv(MULTIPROC_ENV, "")  # restored after: prepare sets it for this process

    folder = tmp_path / "metrics"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "claimed"
        with pytest.raises(MetricsDirInUseError, match=f"pid {holder.pid}"):
            prepare_multiproc_dir(folder)
        assert (folder / "counter_1.db").read_bytes() == b"live"
    finally:
        holder.kill()
        holder.wait()
    # Its owner is gone: the next server claims the folder and starts from empty.
    assert prepare_multiproc_dir(folder) == folder.resolve()
    assert [p.name for p in folder.iterdir()] == [".lock"]
