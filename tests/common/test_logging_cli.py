"""JSON logging and the ``marquee`` command."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from pathlib import Path

from services.cli import main as marquee
from services.common.logging import configure_logging
from tests.common.linegen import generate


def test_json_logs_are_one_object_per_line() -> None:
    buf = io.StringIO()
    configure_logging("INFO", json=True, stream=buf)
    logging.getLogger("marquee.test").info("segment flushed", extra={"rows": 12})
    logging.getLogger("marquee.test").debug("not shown")
    lines = buf.getvalue().splitlines()
    assert len(lines) == 1
    doc = json.loads(lines[0])
    assert doc["message"] == "segment flushed" and doc["rows"] == 12
    assert doc["level"] == "INFO" and doc["logger"] == "marquee.test"


def test_marquee_help_lists_commands(capsys: object) -> None:
    assert marquee(["--help"]) == 0
    assert marquee([]) == 2
    assert marquee(["no-such-command"]) == 2


def test_events_count_on_a_file(tmp_path: Path) -> None:
    gen = generate(500, seed=5)
    path = tmp_path / "lines.txt"
    path.write_text("\n".join(gen.lines) + "\n")
    out = subprocess.run(
        [sys.executable, "-m", "services.cli", "events", "count", "--file", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    doc = json.loads(out)
    assert doc["lines"] == 500
    valid = sum(not hasattr(e, "value") for e in gen.expected)
    assert sum(doc["events"].values()) == valid
