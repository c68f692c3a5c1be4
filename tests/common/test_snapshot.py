"""Training snapshots: schema conformance, deterministic bytes, verified loading."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from services.common.snapshot import (
    SnapshotError,
    read_snapshot,
    resolve_snapshot,
    write_snapshot,
)


def _tables() -> dict[str, pa.Table]:
    tables = {
        "interactions": pa.table(
            {
                "user_id": [1, 1, 2, 3],
                "movie_id": ["a+2000", "a+2000", "b+", "c+1999"],
                "time_ns": [100, 350, 200, 300],
                "minutes": [10, 5, 20, 30],
                "max_minute": [9, 14, 19, 29],
            }
        ),
        "ratings": pa.table(
            {"user_id": [1], "movie_id": ["a+2000"], "rating": [4], "time_ns": [120]}
        ),
        "users": pa.table(
            {
                "user_id": [1, 2, 3],
                "age": [20, None, 40],
                "gender": ["M", "F", None],
                "occupation": ["writer", None, "other"],
            }
        ),
        "movies": pa.table(
            {
                "movie_id": ["a+2000", "b+", "c+1999"],
                "title": ["A", "B", None],
                "year": [2000, None, 1999],
                "genres": [["Drama"], [], None],
                "original_language": ["en", None, "fr"],
                "runtime": [90, None, 100],
                "popularity": [1.0, None, 2.0],
                "vote_average": [6.0, None, 7.0],
                "vote_count": [10, None, 20],
            }
        ),
    }
    return tables


def _shuffled() -> dict[str, pa.Table]:
    return {k: t.take(list(reversed(range(t.num_rows)))) for k, t in _tables().items()}


def test_same_inputs_give_same_bytes(tmp_path: Path) -> None:
    a = write_snapshot(tmp_path / "a", tables=_tables(), until_ns=1000)
    b = write_snapshot(tmp_path / "b", tables=_shuffled(), until_ns=1000)
    assert a["content_hash"] == b["content_hash"]
    for name in a["files"]:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a/manifest.json").read_bytes() == (
        tmp_path / "b/manifest.json"
    ).read_bytes()


def test_manifest_counts_and_time_range(tmp_path: Path) -> None:
    m = write_snapshot(tmp_path / "s", tables=_tables(), until_ns=1000)
    assert m["row_counts"] == {"interactions": 4, "movies": 3, "ratings": 1, "users": 3}
    assert m["time_range"] == {"min_ns": 100, "max_ns": 350}
    snap = read_snapshot(tmp_path / "s")
    assert snap.interactions.column("user_id").to_pylist() == [1, 1, 2, 3]
    assert snap.interactions.column("time_ns").to_pylist() == [100, 350, 200, 300]
    assert snap.content_hash == m["content_hash"]


def test_tampered_snapshot_is_refused(tmp_path: Path) -> None:
    write_snapshot(tmp_path / "s", tables=_tables(), until_ns=1000)
    t = _tables()
    t["ratings"] = pa.table({"user_id": [1], "movie_id": ["a+2000"], "rating": [5], "time_ns": [1]})
    write_snapshot(tmp_path / "other", tables=t, until_ns=1000)
    (tmp_path / "s/ratings.parquet").write_bytes((tmp_path / "other/ratings.parquet").read_bytes())
    with pytest.raises(SnapshotError, match="sha256"):
        read_snapshot(tmp_path / "s")


def test_missing_columns_and_tables_are_errors(tmp_path: Path) -> None:
    t = _tables()
    t["ratings"] = t["ratings"].drop(["rating"])
    with pytest.raises(SnapshotError, match="missing columns"):
        write_snapshot(tmp_path / "s", tables=t, until_ns=1)
    with pytest.raises(SnapshotError, match="expected tables"):
        write_snapshot(tmp_path / "s", tables={"users": t["users"]}, until_ns=1)


def test_latest_is_the_largest_until(tmp_path: Path) -> None:
    write_snapshot(tmp_path / "snaps/old", tables=_tables(), until_ns=1)
    write_snapshot(tmp_path / "snaps/new", tables=_tables(), until_ns=5)
    assert resolve_snapshot(tmp_path / "snaps", "latest").name == "new"
    with pytest.raises(SnapshotError):
        resolve_snapshot(tmp_path / "empty", "latest")
