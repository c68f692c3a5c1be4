"""Data-quality checks (metric + threshold + alert), the ops app, and settings."""

from __future__ import annotations

import logging
from collections import Counter, namedtuple
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from services.ingest.app import create_app
from services.ingest.core import Ingestor
from services.ingest.quality import CHECKS, QualityMonitor
from services.ingest.settings import IngestSettings
from services.ingest.store import EventStore

Rec = namedtuple("Rec", "offset value timestamp")


def _ratio(check: str) -> float | None:
    return REGISTRY.get_sample_value("marquee_ingest_dq_ratio", {"check": check})


def test_a_clean_window_raises_no_alert() -> None:
    q = QualityMonitor(window_lines=1_000, min_lines=100)
    q.observe(Counter({"lines": 1_000, "event:watch": 990, "reason:bad_timestamp": 10}))
    assert q.alerts == []
    assert _ratio("rejected_lines") == pytest.approx(0.01)


@pytest.mark.parametrize(
    ("counts", "check"),
    [
        ({"event:watch": 900, "reason:bad_user_id": 100}, "rejected_lines"),
        ({"event:rate": 900, "reason:rating_out_of_range": 100}, "rating_invalid"),
        ({"event:watch": 970, "reason:unknown_request": 30}, "unknown_request"),
        ({"event:watch": 950, "reason:bad_field_count": 50}, "malformed_lines"),
        ({"event:recommendation": 1000, "reco_list_too_long": 1}, "reco_list_too_long"),
        ({"event:recommendation": 1000, "reco_list_duplicates": 1}, "reco_list_duplicates"),
        ({"event:watch": 1000, "late_events": 100}, "late_events"),
        ({"event:watch": 990, "reason:time_in_future": 10}, "time_out_of_range"),
    ],
)
def test_each_check_alerts_above_its_threshold(
    counts: dict[str, int], check: str, caplog: pytest.LogCaptureFixture
) -> None:
    q = QualityMonitor(window_lines=1_000, min_lines=100)
    before = REGISTRY.get_sample_value("marquee_ingest_dq_alerts_total", {"check": check}) or 0
    with caplog.at_level(logging.WARNING):
        q.observe(Counter({"lines": 1_000, **counts}))
    assert check in [name for name, _ in q.alerts]
    after = REGISTRY.get_sample_value("marquee_ingest_dq_alerts_total", {"check": check})
    assert after == before + 1
    assert any(check in r.getMessage() and "threshold" in r.getMessage() for r in caplog.records)
    assert (_ratio(check) or 0) > CHECKS[check].threshold


def test_small_windows_never_alert() -> None:
    q = QualityMonitor(window_lines=10, min_lines=100)
    q.observe(Counter({"lines": 10, "reason:unknown_request": 10}))
    assert q.alerts == []


def test_a_new_request_shape_is_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ing = Ingestor(EventStore(tmp_path, writer=True))
    lines = [f"2026-03-02T10:00:00,{i},GET /v2/stream/{i}".encode() for i in range(25)]
    lines += [f"2026-03-02T10:00:00,1,GET /dat{'a' * i}"[:-1].encode() for i in range(25)]
    with caplog.at_level(logging.WARNING):
        ing.add(0, [Rec(i, v, 0) for i, v in enumerate(lines)])
        ing.flush()
        ing.add(0, [Rec(i + 100, v, 0) for i, v in enumerate(lines)])
        ing.flush()
    shapes = [r for r in caplog.records if "new request shape" in r.getMessage()]
    assert len(shapes) == 1 and shapes[0].shape == "GET /vN/stream"  # type: ignore[attr-defined]


def test_batch_counts_reach_the_checks(tmp_path: Path) -> None:
    seen: list[Counter[str]] = []

    class Spy(QualityMonitor):
        def observe(self, counts: Counter[str]) -> None:
            seen.append(counts)

    ids = ", ".join(f"m+{2000 + i}" for i in range(21))
    lines = [
        f"2026-03-02T10:00:00,1,recommendation request r:8082, status 200, result: {ids}, 5 ms",
        "2026-03-02T10:00:01,1,recommendation request r:8082, status 200, result: a+1999, a+1999,"
        " 5 ms",
        "2026-03-02T10:00:02,1,GET /rate/a+1999=9",
    ]
    ing = Ingestor(EventStore(tmp_path, writer=True), quality=Spy())
    ing.add(0, [Rec(i, v.encode(), 0) for i, v in enumerate(lines)])
    ing.flush()
    c = seen[0]
    assert c["lines"] == 3 and c["event:recommendation"] == 2
    assert c["reco_list_too_long"] == 1 and c["reco_list_duplicates"] == 1
    assert c["reason:rating_out_of_range"] == 1


class _Status:
    def __init__(self, ready: bool) -> None:
        self._ready = ready

    def healthy(self) -> bool:
        return True

    def ready(self) -> tuple[bool, str]:
        return self._ready, "partitions [0]" if self._ready else "no partitions assigned"

    def stats(self) -> dict[str, Any]:
        return {"buffered_lines": 3}


def _settings(tmp_path: Path) -> IngestSettings:
    return IngestSettings(kafka_bootstrap_servers="127.0.0.1:1", store_path=tmp_path)


def test_ops_endpoints(tmp_path: Path) -> None:
    client = create_app(_settings(tmp_path), _Status(True)).test_client()
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    assert client.get("/stats").json == {"buffered_lines": 3}
    body = client.get("/metrics").data.decode()
    for name in (
        "marquee_ingest_events_total",
        "marquee_ingest_segment_flush_seconds",
        "marquee_ingest_consumer_lag",
        "marquee_ingest_enrichment_errors_total",
    ):
        assert name in body
    assert (
        create_app(_settings(tmp_path), _Status(False)).test_client().get("/readyz").status_code
        == 503
    )
    assert create_app(_settings(tmp_path)).test_client().get("/readyz").status_code == 503


def test_settings_need_a_store_and_document_every_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MARQUEE_INGEST_KAFKA_BOOTSTRAP_SERVERS", "k:9092")
    monkeypatch.delenv("MARQUEE_INGEST_STORE_PATH", raising=False)
    with pytest.raises(ValueError, match="store_path"):
        IngestSettings()
    monkeypatch.setenv("MARQUEE_INGEST_STORE_PATH", "/data/events")
    monkeypatch.setenv("MARQUEE_INGEST_FLUSH_MAX_EVENTS", "123")
    s = IngestSettings()
    assert s.store_path == Path("/data/events") and s.flush_max_events == 123
    assert s.dlq_topic == "movielog-dlq" and s.topics == ("movielog", "exposures")
    assert all(f.description for f in IngestSettings.model_fields.values())


def test_run_serves_the_ops_port_on_loopback_with_a_production_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``ingest run`` puts its ops port on waitress (not Werkzeug's development server), bound
    to loopback unless told otherwise, and closes it when the consumer stops."""
    import signal

    import requests

    from services.ingest import cli
    from tests.infra import free_port

    port = free_port()
    seen: dict[str, Any] = {}

    class FakeService(_Status):
        def __init__(self, settings: IngestSettings, stop: Any) -> None:
            super().__init__(True)
            seen["host"] = settings.http_host

        def run(self) -> int:
            resp = requests.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
            seen["server"], seen["ready"] = resp.headers.get("Server"), resp.json()
            return 0

    for var in ("MARQUEE_INGEST_HTTP_HOST", "MARQUEE_INGEST_HTTP_PORT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MARQUEE_INGEST_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.setenv("MARQUEE_INGEST_LOG_JSON", "false")
    monkeypatch.setattr("services.ingest.consumer.IngestService", FakeService)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    root = logging.getLogger()
    root_handlers, root_level = list(root.handlers), root.level
    try:
        assert cli.main(["run", "--store", str(tmp_path), "--port", str(port)]) == 0
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
        root.handlers[:] = root_handlers
        root.setLevel(root_level)
    assert seen == {
        "host": "127.0.0.1",
        "server": "marquee",
        "ready": {"status": "ready", "detail": "partitions [0]"},
    }
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
