"""Prepared data: temporal split without leakage, degenerate inputs, MovieLens conversion."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from services.common.events import is_movie_id
from services.common.scoring import segment_key
from services.common.snapshot import SnapshotError
from services.trainer import data as td
from services.trainer import synthetic


def test_split_is_temporal_and_disjoint(prepared: td.Prepared) -> None:
    p = prepared.periods
    cut = prepared.info["cutoffs_ns"]
    assert cut["val"] <= cut["test"]
    assert p["train"].inter_time.max() < cut["val"] <= p["val"].inter_time.min()
    assert p["val"].inter_time.max() < cut["test"] <= p["test"].inter_time.min()
    assert p["train"].rate_time.max() < cut["val"]
    n = prepared.n_items
    train = set((p["train"].inter_user.astype(np.int64) * n + p["train"].inter_item).tolist())
    test = set((p["test"].inter_user.astype(np.int64) * n + p["test"].inter_item).tolist())
    assert train.isdisjoint(test)
    assert len(p["test"].inter_user) > 0 and len(p["val"].inter_user) > 0
    total = sum(len(x.inter_user) for x in p.values())
    assert abs(len(p["test"].inter_user) / total - 0.1) < 0.02


def test_check_disjoint_catches_an_overlap(prepared: td.Prepared) -> None:
    train, test = prepared.periods["train"], prepared.periods["test"]
    # smuggle one training pair into the test period, at a test-period time
    leaked = td.Period(
        np.r_[test.inter_user, train.inter_user[:1]],
        np.r_[test.inter_item, train.inter_item[:1]],
        np.r_[test.inter_minutes, train.inter_minutes[:1]],
        np.r_[test.inter_time, test.inter_time[:1]],
        test.rate_user,
        test.rate_item,
        test.rate_value,
        test.rate_time,
    )
    bad = td.Prepared(
        prepared.item_ids,
        prepared.user_ids,
        prepared.gender,
        prepared.age,
        {**prepared.periods, "test": leaked},
        prepared.info,
    )
    with pytest.raises(td.LeakageError, match="both train and test"):
        td.check_disjoint(bad)
    early = td.Prepared(
        prepared.item_ids,
        prepared.user_ids,
        prepared.gender,
        prepared.age,
        {**prepared.periods, "train": prepared.periods["test"], "test": prepared.periods["train"]},
        prepared.info,
    )
    with pytest.raises(td.LeakageError):
        td.check_disjoint(early)


def test_save_load_round_trip(prepared: td.Prepared, tmp_path: Path) -> None:
    td.save(prepared, tmp_path / "p")
    back = td.load(tmp_path / "p")
    assert back.item_ids.tolist() == prepared.item_ids.tolist()
    assert np.array_equal(back.user_ids, prepared.user_ids)
    for name in td.PERIODS:
        a, b = back.periods[name], prepared.periods[name]
        assert np.array_equal(a.inter_item, b.inter_item)
        assert np.array_equal(a.rate_value, b.rate_value)
    assert back.info == prepared.info


def test_segments_match_scoring(prepared: td.Prepared) -> None:
    seg = prepared.segments()
    for u in range(0, prepared.n_users, 37):
        age = int(prepared.age[u])
        assert seg[u] == segment_key(str(prepared.gender[u]), age if age >= 0 else None)


def test_missing_snapshot_message(tmp_path: Path) -> None:
    with pytest.raises(SnapshotError, match="no snapshot at"):
        td.load_source(str(tmp_path / "nope"))


def test_tiny_and_single_user_inputs() -> None:
    tables, _ = synthetic.generate(n_users=1, n_items=5, mean_watches=3, seed=1)
    p = td.prepare(tables, {"content_hash": "x"}, 0.2, 0.2)
    assert p.n_users == 1
    assert sum(len(x.inter_user) for x in p.periods.values()) == tables["interactions"].num_rows
    # everything at one instant: one period gets it all, the rest are empty — no crash
    t = tables["interactions"]
    same = t.set_column(4, "first_ns", pa.array(np.full(t.num_rows, 10, np.int64)))
    p2 = td.prepare(
        {**tables, "interactions": same, "ratings": tables["ratings"].slice(0, 0)}, {}, 0.1, 0.1
    )
    sizes = sorted(len(x.inter_user) for x in p2.periods.values())
    assert sizes == [0, 0, t.num_rows]


def test_movielens_conversion(ml100k: str) -> None:
    from services.trainer.movielens import load_tables

    tables, prov = load_tables(ml100k)
    assert tables["ratings"].num_rows == 100_000
    ids = tables["movies"]["movie_id"].to_pylist()
    assert len(ids) == len(set(ids)) == 1682
    assert all(is_movie_id(m) for m in ids)
    assert "toy+story+1995" in ids
    assert tables["users"].num_rows == 943
    assert prov["content_hash"] and prov["time_range"]["min_ns"] < prov["time_range"]["max_ns"]
