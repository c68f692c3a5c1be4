"""Monitor fixtures: a real PostgreSQL server (scripts/postgres.sh) for the history tests."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.infra import skip_or_fail

ROOT = Path(__file__).resolve().parents[2]
PG_PORT = os.environ.get("MARQUEE_TEST_PG_PORT", "25432")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A PostgreSQL server on loopback for the session; its admin URL (database ``marquee``)."""
    env = {**os.environ, "PG_PORT": PG_PORT}
    script = str(ROOT / "scripts" / "postgres.sh")
    done = subprocess.run(
        [script, "start"], env=env, capture_output=True, text=True, timeout=600, check=False
    )
    if done.returncode != 0:
        skip_or_fail(f"PostgreSQL did not start: {done.stderr.strip()[-500:]}")
    try:
        yield done.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run([script, "stop"], env=env, capture_output=True, timeout=120, check=False)


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A fresh, empty database on the session's server; dropped after the test."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(postgres_server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = postgres_server.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
