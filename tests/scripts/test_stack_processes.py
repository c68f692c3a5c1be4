"""``make down`` stops exactly what the stack started, from another process, and only that."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from scripts.stack import Ports, Processes, Stack, group_members

# A service with a child of its own, like gunicorn's master and its workers.
CHILD = "import subprocess, time; subprocess.Popen(['sleep', '300']); time.sleep(300)"
SLEEPER = [sys.executable, "-c", CHILD]


def test_down_from_a_fresh_object_stops_every_recorded_group_and_is_idempotent(
    tmp_path: Path,
) -> None:
    up = Processes(tmp_path)
    up.start("a", SLEEPER)
    up.start("b", SLEEPER)
    pids = {n: e["pid"] for n, e in up.recorded().items()}
    assert set(pids) == {"a", "b"} and all(up.alive(n) for n in pids)
    # "make down" runs in another process: it knows only the pid file.
    stack = Stack(tmp_path, Ports.from_base(1))
    stopped = stack.down()
    assert sorted(stopped) == ["a", "b"]
    for proc in up.procs.values():
        proc.wait(timeout=10)  # the test process is their parent: reap them
    # Each service's own children (gunicorn's workers) go with it: the whole group stops.
    assert all(group_members(pgid) == [] for pgid in pids.values())
    assert json.loads((tmp_path / "pids.json").read_text()) == {}
    assert Stack(tmp_path, Ports.from_base(1)).down() == []  # again: nothing to do
    up.close_logs()


def test_a_recycled_pid_is_never_signalled(tmp_path: Path) -> None:
    other = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        # The record names a running pid, but with another start time: not the process we began.
        (tmp_path / "pids.json").write_text(json.dumps({"x": {"pid": other.pid, "start": 1}}))
        procs = Processes(tmp_path)
        assert not procs.alive("x")
        procs.stop()
        assert other.poll() is None
        assert procs.recorded() == {}
    finally:
        other.kill()
        other.wait()


def test_a_single_service_can_be_stopped_and_the_rest_keep_running(tmp_path: Path) -> None:
    procs = Processes(tmp_path)
    procs.start("keep", SLEEPER)
    procs.start("go", SLEEPER)
    assert procs.stop(["go"]) == ["go"]
    assert procs.alive("keep") and not procs.alive("go")
    assert procs.stop() == ["keep"]
    assert procs.recorded() == {}
    procs.close_logs()


def test_ports_are_distinct_and_every_service_is_scraped() -> None:
    for ports in (Ports(), Ports.from_base(30_000)):
        values = list(vars(ports).values())
        assert len(set(values)) == len(values) and ports.kafka + 1 not in values
        targets = ports.scrape_targets()
        assert set(targets) == {
            "simulator", "ingest", "recommender-stable", "recommender-canary", "router", "monitor",
        }  # fmt: skip
