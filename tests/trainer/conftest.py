"""Fixtures of the trainer tests: a tiny synthetic snapshot and its prepared split."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.trainer import data as td
from services.trainer import synthetic


@pytest.fixture(scope="session")
def snapshot_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic snapshot (600 users, 150 movies) written with write_snapshot."""
    out = tmp_path_factory.mktemp("snapshots") / "s1"
    synthetic.write(out, n_users=600, n_items=150, mean_watches=6.0, rating_share=0.4, seed=3)
    return out


@pytest.fixture(scope="session")
def prepared(snapshot_dir: Path) -> td.Prepared:
    """The snapshot, indexed and split in time (10% validation, 10% test)."""
    tables, provenance = td.load_source(str(snapshot_dir))
    return td.prepare(tables, provenance, 0.1, 0.1)
