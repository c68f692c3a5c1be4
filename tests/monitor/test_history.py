"""History in SQL: migrations create the schema; steps and decisions round-trip, exactly once.

Runs on SQLite and on a real PostgreSQL server (Debian's package, scripts/postgres.sh).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from services.monitor.analysis import analyze
from services.monitor.history import History
from services.monitor.policy import decide
from tests.monitor.factory import config, state


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def history(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[History]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'history.sqlite3'}"
    else:
        url = request.getfixturevalue("postgres_url")
    h = History(url)
    yield h
    h.close()


def test_migrations_create_every_table(history: History) -> None:
    assert history.revision() is None
    history.migrate()
    history.migrate()  # idempotent
    assert history.revision() == "0001"
    names = set(sa.inspect(history.engine).get_table_names())
    assert {"arm_results", "served_quality", "checks", "decisions", "alembic_version"} <= names


def test_steps_and_decisions_round_trip_and_a_step_is_recorded_once(history: History) -> None:
    history.migrate()
    cfg = config()
    first = analyze(state({"control": (1000, 0.2), "treatment": (1000, 0.25)}), cfg)
    first.edge_ns = 1_000
    second = analyze(state({"control": (2000, 0.2), "treatment": (2000, 0.25)}, seed=1), cfg)
    second.edge_ns = 2_000
    assert history.record_step(first, lag_s=1.5)
    assert not history.record_step(first)  # a restart re-recording the same step: no change
    assert history.record_step(second, previous=first)
    rows = history.arm_series("exp-1")
    assert [(r["at_ns"], r["arm"]) for r in rows] == [
        (1000, "control"),
        (1000, "treatment"),
        (2000, "control"),
        (2000, "treatment"),
    ]
    assert rows[1]["p_value"] is not None and rows[0]["p_value"] is None
    assert rows[3]["users"] == 2000
    quality = history.quality_series("exp-1")
    t2 = next(q for q in quality if q["at_ns"] == 2000 and q["arm"] == "treatment")
    assert t2["lists"] == second.arm("treatment").lists - first.arm("treatment").lists
    d = decide(cfg, second)
    history.record_decision("exp-1", 2000, d.to_json(), {"dry_run": True}, dry_run=True)
    got = history.decisions("exp-1")
    assert len(got) == 1 and got[0]["action"] == str(d.action) and got[0]["dry_run"]
    assert got[0]["numbers"] == d.to_json()["numbers"]
