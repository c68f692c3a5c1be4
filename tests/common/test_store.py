"""The store's read side in common: every kind, exposures too, reads back as it was written."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import pyarrow.compute as pc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.common.events import Event, ExposureEvent, format_line, parse
from services.common.store import KINDS, SCHEMAS, STREAM_KINDS, EventStoreReader
from services.ingest.core import Ingestor
from services.ingest.store import EventStore
from tests.common.strategies import events
from tests.common.test_events import CONTRACT_LINES, EXPOSURE_LINES
from tests.infra import ROOT

Rec = namedtuple("Rec", "offset value timestamp")
KAFKA_MS = 1_796_083_200_000


def ingest(root: Path, values: list[str], lenient: bool = False) -> None:
    # Generated times span a century: ``lenient`` switches the time checks off (ingest tests them).
    far = 1e13 if lenient else 86_400.0
    ing = Ingestor(
        EventStore(root, writer=True),
        future_tolerance_s=far,
        max_lateness_s=far if lenient else 7 * far,
        late_window_s=far if lenient else 3_600.0,
    )
    ing.add(0, [Rec(i, v.encode(), KAFKA_MS) for i, v in enumerate(values)])
    ing.flush()
    ing.store.close()


def test_every_kind_has_a_schema_and_exposures_are_not_stream_kinds() -> None:
    assert set(KINDS) | {"quarantine"} == set(SCHEMAS)
    assert "exposure" in KINDS and "exposure" not in STREAM_KINDS
    # Exposure columns are the event's fields: the ingest buffer relies on it.
    names = SCHEMAS["exposure"].names
    assert names[:3] == ["topic", "partition", "offset"]
    assert set(names[3:]) == set(ExposureEvent._fields)


def test_exposures_are_stored_and_read_back_with_the_common_reader(tmp_path: Path) -> None:
    values = [*CONTRACT_LINES, *EXPOSURE_LINES]
    ingest(tmp_path, values)
    reader = EventStoreReader(tmp_path)
    assert reader.counts()["exposure"] == len(EXPOSURE_LINES)
    assert sorted(format_line(e) for _, _, e in reader.iter_events()) == sorted(values)
    table = reader.read("exposure")
    assert table.schema == SCHEMAS["exposure"]
    interleaved = table.filter(pc.equal(table["arm"], "interleave")).to_pylist()[0]
    assert interleaved["items"] == ["the+lost+harbor+1987", "monsters_+inc.+2001"]
    assert interleaved["item_arms"] == ["svd", "als"]
    folders = {p.relative_to(tmp_path).parts[:2] for p in reader.files("exposure")}
    assert folders == {("events", "exposure")}
    # Time filters work on exposures as on every other kind.
    first = parse(EXPOSURE_LINES[1])
    assert isinstance(first, ExposureEvent)
    assert reader.read("exposure", since_ns=first.time_ns).num_rows == 3


def test_a_reader_sees_new_commits_after_refresh(tmp_path: Path) -> None:
    ingest(tmp_path, EXPOSURE_LINES[:1])
    reader = EventStoreReader(tmp_path)
    ing = Ingestor(EventStore(tmp_path, writer=True))
    ing.add(0, [Rec(1, EXPOSURE_LINES[1].encode(), KAFKA_MS)])
    ing.flush()
    assert reader.counts()["exposure"] == 1
    reader.refresh()
    assert reader.counts()["exposure"] == 2 and reader.next_offsets() == {("movielog", 0): 2}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(events, min_size=1, max_size=30))
def test_any_events_round_trip_through_the_store(
    tmp_path_factory: pytest.TempPathFactory, evs: list[Event]
) -> None:
    root = tmp_path_factory.mktemp("store")
    values = [format_line(e) for e in evs]
    ingest(root, values, lenient=True)
    reader = EventStoreReader(root)
    assert reader.counts().get("quarantine", 0) == 0
    assert sorted(format_line(e) for _, _, e in reader.iter_events()) == sorted(values)


def test_common_and_the_services_import_no_other_service() -> None:
    for folder in sorted((ROOT / "services").iterdir()):
        if not (folder / "__init__.py").is_file():
            continue
        allowed = {"common", folder.name}
        for path in folder.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = (
                    [a.name for a in node.names]
                    if isinstance(node, ast.Import)
                    else [node.module or ""]
                    if isinstance(node, ast.ImportFrom)
                    else []
                )
                for name in names:
                    parts = name.split(".")
                    if parts[0] == "services" and len(parts) > 1:
                        assert parts[1] in allowed, f"{path.relative_to(ROOT)} imports {name}"


def test_reading_the_store_loads_no_ingest_code() -> None:
    code = (
        "import sys; from services.common.store import EventStoreReader; "
        "from services.common import online; "
        "print(sorted(m for m in sys.modules if m.startswith('services.ingest')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
