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
from services.trainer.util import extreme_per_key, unique_ints
from tests.trainer.helpers import snapshot_tables


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
    total = sum(len(p[x].inter_user) for x in td.PERIODS)
    assert abs(len(p["test"].inter_user) / total - 0.1) < 0.02


def test_check_disjoint_catches_an_overlap(prepared: td.Prepared) -> None:
    train, test = prepared.periods["train"], prepared.periods["test"]
    # smuggle one training pair into the test period, at a test-period time
    leaked = td.Period(
        np.r_[test.inter_user, train.inter_user[:1]],
        np.r_[test.inter_item, train.inter_item[:1]],
        np.r_[test.inter_minutes, train.inter_minutes[:1]],
        np.r_[test.inter_time, test.inter_time[:1]],
        np.r_[test.inter_last, test.inter_time[:1]],
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
    assert prepared.item_meta is not None and back.item_meta is not None
    np.testing.assert_array_equal(back.item_meta, prepared.item_meta)  # NaN equals NaN here


def test_movie_api_numbers_reach_the_models() -> None:
    watches = [(1, "a+2001", 0, 10), (2, "b+2002", 1, 20), (3, "c+2003", 2, 30)]
    tables = snapshot_tables(watches, [(1, "a+2001", 0, 4)])
    movies = pa.table(
        {
            "movie_id": ["c+2003", "a+2001"],  # not in catalog order, one movie missing
            "vote_average": pa.array([7.5, None], pa.float64()),
            "vote_count": pa.array([120, 3], pa.int64()),
            "popularity": pa.array([None, 2.5], pa.float64()),
            "runtime": pa.array([95, 130], pa.int32()),
        }
    )
    p = td.prepare({**tables, "movies": movies}, {}, 0.0, 0.0)
    assert td.META_COLUMNS == ("vote_average", "vote_count", "popularity", "runtime")
    assert p.item_ids.tolist() == ["a+2001", "b+2002", "c+2003"]
    assert p.item_meta is not None
    np.testing.assert_array_equal(
        p.item_meta,
        np.array([[np.nan, 3, 2.5, 130], [np.nan] * 4, [7.5, 120, np.nan, 95]], np.float32),
    )
    # a source without the movie API's numbers (MovieLens' u.item) has none, not a NaN block
    plain = td.prepare({**tables, "movies": pa.table({"movie_id": ["a+2001"]})}, {}, 0.0, 0.0)
    assert plain.item_meta is None


def test_a_stage_loads_only_the_periods_it_uses(prepared: td.Prepared, tmp_path: Path) -> None:
    td.save(prepared, tmp_path / "p")
    train_only = td.load(tmp_path / "p", ("train",))
    assert set(train_only.periods) == {"train"}
    assert np.array_equal(train_only.train.inter_user, prepared.train.inter_user)
    refit = td.load(tmp_path / "p", ("all",)).all_periods()
    expected = td.load(tmp_path / "p").all_periods()
    for name in ("inter_user", "inter_minutes", "inter_last", "rate_value"):
        assert np.array_equal(getattr(refit.train, name), getattr(expected.train, name)), name
    # an older prepared folder without the ``all`` files: the refit merges the periods again
    for f in ("all_interactions.parquet", "all_ratings.parquet"):
        (tmp_path / "p" / f).unlink()
    old = td.load(tmp_path / "p", ("all",)).all_periods()
    assert len(old.train.inter_user) == sum(len(prepared.periods[p].inter_user) for p in td.PERIODS)


def test_segments_match_scoring(prepared: td.Prepared) -> None:
    seg = prepared.segments()
    for u in range(0, prepared.n_users, 37):
        age = int(prepared.age[u])
        assert seg[u] == segment_key(str(prepared.gender[u]), age if age >= 0 else None)


def test_segment_index_is_unique_of_segments(prepared: td.Prepared) -> None:
    names, index = prepared.segment_index()
    expected_names, expected_index = np.unique(prepared.segments(), return_inverse=True)
    assert names.tolist() == expected_names.tolist()
    assert index.tolist() == expected_index.reshape(-1).tolist()


def test_sort_based_unique_and_latest_per_key() -> None:
    rng = np.random.default_rng(0)
    keys = rng.integers(0, 50, 1000).astype(np.int64)
    times = rng.integers(0, 10**12, 1000).astype(np.int64)
    assert unique_ints(keys).tolist() == np.unique(keys).tolist()
    assert unique_ints(keys[:1]).tolist() == keys[:1].tolist()
    assert unique_ints(keys[:0]).tolist() == []
    for latest in (True, False):
        k, t = extreme_per_key(keys, times, latest=latest)
        assert k.tolist() == np.unique(keys).tolist()
        pick = max if latest else min
        assert t.tolist() == [pick(times[keys == v].tolist()) for v in k.tolist()]


def test_missing_snapshot_message(tmp_path: Path) -> None:
    with pytest.raises(SnapshotError, match="no snapshot at"):
        td.load_source(str(tmp_path / "nope"))


def test_tiny_and_single_user_inputs() -> None:
    tables, _ = synthetic.generate(n_users=1, n_items=5, mean_watches=3, seed=1)
    p = td.prepare(tables, {"content_hash": "x"}, 0.2, 0.2)
    assert p.n_users == 1
    t = tables["interactions"]
    pairs = len(set(zip(t["user_id"].to_pylist(), t["movie_id"].to_pylist(), strict=True)))
    assert sum(len(p.periods[x].inter_user) for x in td.PERIODS) <= pairs
    assert len(p.periods["all"].inter_user) == pairs
    # everything at one instant: one period gets it all, the rest are empty — no crash
    same = t.set_column(2, "time_ns", pa.array(np.full(t.num_rows, 10, np.int64)))
    p2 = td.prepare(
        {**tables, "interactions": same, "ratings": tables["ratings"].slice(0, 0)}, {}, 0.1, 0.1
    )
    sizes = sorted(len(p2.periods[x].inter_user) for x in td.PERIODS)
    assert sizes == [0, 0, pairs]


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


def test_each_period_is_cut_at_its_own_boundary() -> None:
    # ten watches start at t = 0..9 and one rating at t = 3: of these eleven pair times the
    # last 30% (from t = 6) are held out, the last 10% (from t = 8) test
    watches = [(u, f"m{u}+", u, 10) for u in range(10)]
    # user 0's session on m0+ goes on into validation (t=7) and test (t=9): 10 + 5 + 7 minutes
    watches += [(0, "m0+", 7, 5), (0, "m0+", 9, 7)]
    # user 0 rates m0+ 2 during training, then re-rates it 5 during the test period
    ratings = [(0, "m0+", 3, 2), (0, "m0+", 9, 5)]
    p = td.prepare(snapshot_tables(watches, ratings), {}, val_fraction=0.2, test_fraction=0.1)
    assert p.info["cutoffs_ns"] == {"val": 6, "test": 8}
    train, everything = p.periods["train"], p.periods["all"]
    u0 = int(np.searchsorted(p.user_ids, 0))
    m0 = int(np.searchsorted(p.item_ids, "m0+"))
    row = np.flatnonzero((train.inter_user == u0) & (train.inter_item == m0))
    assert train.inter_minutes[row].tolist() == [10.0]  # not the 12 minutes watched after t=6
    assert train.inter_last[row].tolist() == [0]
    assert train.rate_value.tolist() == [2.0]  # the value given then, not the later re-rating
    assert train.rate_time.tolist() == [3]
    # the pair is training's: it is no held-out watch or rating of a later period
    for name in ("val", "test"):
        assert m0 not in p.periods[name].inter_item.tolist()
        assert len(p.periods[name].rate_value) == 0
    # the model that serves sees everything: every minute, the latest rating
    row = np.flatnonzero((everything.inter_user == u0) & (everything.inter_item == m0))
    assert everything.inter_minutes[row].tolist() == [22.0]
    assert everything.inter_last[row].tolist() == [9]
    assert everything.rate_value.tolist() == [5.0]
    assert p.all_periods().train is everything
    td.check_disjoint(p)


def test_check_disjoint_looks_at_every_time_column(prepared: td.Prepared) -> None:
    train = prepared.periods["train"]
    cut = prepared.info["cutoffs_ns"]["val"]
    # a training watch whose first minute is in time but whose minutes run past the cut-off
    late = td.Period(
        *(
            np.r_[train.inter_last[:-1], cut] if f == "inter_last" else getattr(train, f)
            for f in td.Period.__dataclass_fields__
        )
    )
    assert int(late.inter_time.max()) < cut
    bad = td.Prepared(
        prepared.item_ids,
        prepared.user_ids,
        prepared.gender,
        prepared.age,
        {**prepared.periods, "train": late},
        prepared.info,
    )
    with pytest.raises(
        td.LeakageError, match=r"train has an event after its period ends \(inter_last\)"
    ):
        td.check_disjoint(bad)
