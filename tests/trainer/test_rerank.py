"""The two-stage family: labels after features, LightGBM's text format served exactly, no pickle."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pyarrow as pa
import pytest

from services.common.artifacts import ArtifactError, load_artifact, write_artifact
from services.common.scoring import (
    RANKER_FILE,
    Scorer,
    TreeEnsemble,
    _top_unblocked,
)
from services.trainer import data as td
from services.trainer.models.base import Fitted
from services.trainer.models.rerank import RerankModel, empty_model, feature_names, label_windows
from tests.trainer.helpers import snapshot_tables

SMALL = {
    "l2": 50.0,
    "max_items": 100,
    "neighbours": 20,
    "als_factors": 4,
    "als_iterations": 3,
    "n_estimators": 15,
    "min_data_in_leaf": 20,
}


@pytest.fixture(scope="module")
def fitted(prepared: td.Prepared) -> Fitted:
    return RerankModel(SMALL, seed=5).fit(prepared)


def _keys(period: td.Period, n: int) -> set[int]:
    return set(period.pairs(n).tolist())


def test_labels_come_after_every_feature_event(prepared: td.Prepared) -> None:
    n = prepared.n_items
    train_pairs = _keys(prepared.train, n)
    windows = label_windows(prepared, 0.15, 3)
    assert len(windows) == 3
    later = np.iinfo(np.int64).max
    for feats, labels, start in windows:
        f = feats.train
        # every event the features are computed from happened before the window starts ...
        for t in (f.inter_time, f.inter_last, f.rate_time):
            assert len(t) == 0 or int(t.max()) < start
        # ... and every label pair first appears inside the window, in the training period
        assert len(labels) > 0 and set(labels.tolist()) <= train_pairs
        assert set(labels.tolist()).isdisjoint(_keys(f, n))
        tr = prepared.train
        key_i = tr.inter_user.astype(np.int64) * n + tr.inter_item
        key_r = tr.rate_user.astype(np.int64) * n + tr.rate_item
        in_labels_i = np.isin(key_i, labels)
        in_labels_r = np.isin(key_r, labels)
        assert np.all(tr.inter_time[in_labels_i] >= start)
        assert np.all(tr.rate_time[in_labels_r] >= start)
        assert np.all(tr.inter_time[in_labels_i] < later)
        later = start  # windows go back in time and do not overlap
    assert windows[0][2] > windows[1][2] > windows[2][2]


def test_fit_reads_the_training_period_only(prepared: td.Prepared, fitted: Fitted) -> None:
    rng = np.random.default_rng(0)
    scrambled = {
        name: dataclasses.replace(p, inter_item=rng.permutation(p.inter_item))
        for name, p in prepared.periods.items()
        if name in ("val", "test")
    }
    other = dataclasses.replace(prepared, periods={**prepared.periods, **scrambled})
    again = RerankModel(SMALL, seed=5).fit(other)
    assert again.texts == fitted.texts
    assert again.arrays.keys() == fitted.arrays.keys()
    for key, value in fitted.arrays.items():
        np.testing.assert_array_equal(again.arrays[key], value, err_msg=key)


def test_ranker_is_trained_and_served_exactly(prepared: td.Prepared, fitted: Fitted) -> None:
    text = fitted.texts[RANKER_FILE]
    booster = lgb.Booster(model_str=text)  # LightGBM's own format, readable by LightGBM
    assert booster.num_trees() >= 1
    assert booster.feature_name() == feature_names(prepared)
    assert fitted.info["ranker"]["queries_fit"] > 0
    scorer = fitted.scorer
    for row in range(0, len(scorer.user_ids), 37):
        cands, feats = scorer.stage_one(row)
        expected = booster.predict(feats, raw_score=True)
        np.testing.assert_array_equal(scorer.ranker.predict(feats), expected)
        order = np.lexsort((cands, -feats[:, 0], -expected))
        assert scorer.top_k_indices(row, 20).tolist() == cands[order[:20]].tolist()
        assert not set(cands.tolist()) & set(scorer.seen(row).tolist())


def test_tree_ensemble_matches_lightgbm_with_missing_values() -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2000, 6))
    y = (x[:, 0] + x[:, 1] * x[:, 2] > 0.5).astype(float)
    x[rng.random(x.shape) < 0.1] = np.nan  # trains "NaN" missing-type splits
    params = {"objective": "lambdarank", "verbosity": -1, "num_leaves": 12, "seed": 1}
    booster = lgb.train(params, lgb.Dataset(x, y, group=[100] * 20), 30)
    ens = TreeEnsemble.from_lightgbm(booster.model_to_string())
    probe = rng.standard_normal((300, 6))
    probe[rng.random(probe.shape) < 0.1] = np.nan
    np.testing.assert_array_equal(ens.predict(probe), booster.predict(probe, raw_score=True))
    for rows in (1, 2, 3):  # the tree sum stays LightGBM's running sum at any row count
        np.testing.assert_array_equal(
            ens.predict(probe[:rows]), booster.predict(probe[:rows], raw_score=True)
        )
    # a model with no trees is still LightGBM's format and scores every candidate 0
    empty = empty_model([f"f{i}" for i in range(6)])
    assert lgb.Booster(model_str=empty).num_trees() == 0
    assert not TreeEnsemble.from_lightgbm(empty).predict(probe).any()


def test_categorical_splits_are_refused() -> None:
    rng = np.random.default_rng(4)
    x = rng.integers(0, 5, (600, 2)).astype(float)
    y = (x[:, 0] == 3).astype(float)
    params = {"objective": "lambdarank", "verbosity": -1, "min_data_per_group": 5}
    ds = lgb.Dataset(x, y, group=[60] * 10, categorical_feature=[0])
    text = lgb.train(params, ds, 3).model_to_string()
    with pytest.raises(ArtifactError, match="categorical"):
        TreeEnsemble.from_lightgbm(text)


def test_artifact_round_trip_and_sha256(
    fitted: Fitted, prepared: td.Prepared, tmp_path: Path
) -> None:
    out = tmp_path / "rerank"
    m = write_artifact(
        out,
        name="rerank",
        family="rerank",
        arrays=fitted.arrays,
        params=fitted.params,
        snapshot={},
        texts=fitted.texts,
    )
    assert set(m.files) == {"arrays.npz", RANKER_FILE}
    loaded = load_artifact(out)
    assert loaded.texts == fitted.texts
    served = Scorer(loaded)
    for u in [int(u) for u in prepared.user_ids[::40]] + [10**9]:
        assert served.recommend(u, 20) == fitted.scorer.recommend(u, 20)
    # a changed ranker is refused, like changed arrays
    (out / RANKER_FILE).write_text(fitted.texts[RANKER_FILE].replace("shrinkage=", "shrinkage=9"))
    with pytest.raises(ArtifactError, match="sha256"):
        load_artifact(out)
    # and an artifact without its ranker cannot be served
    bare = tmp_path / "bare"
    write_artifact(
        bare, name="rerank", family="rerank", arrays=fitted.arrays, params={}, snapshot={}
    )
    with pytest.raises(ArtifactError, match=RANKER_FILE):
        Scorer(load_artifact(bare))


def test_text_file_names_are_checked(tmp_path: Path) -> None:
    arrays = {"x": np.zeros(1)}
    with pytest.raises(ArtifactError, match="invalid text file name"):
        write_artifact(
            tmp_path / "a", name="a", family="popularity", arrays=arrays, params={}, snapshot={},
            texts={"../evil.txt": "x"},
        )  # fmt: skip


def test_deterministic_with_a_seed(prepared: td.Prepared, fitted: Fitted) -> None:
    again = RerankModel(SMALL, seed=5).fit(prepared)
    assert again.texts == fitted.texts
    for key, value in fitted.arrays.items():
        np.testing.assert_array_equal(again.arrays[key], value, err_msg=key)


def test_stage_one_als_is_the_same_on_any_number_of_threads(prepared: td.Prepared) -> None:
    """ALS runs on every core (``als_threads: 0``) because the thread count cannot change it."""
    one, two = (
        RerankModel({**SMALL, "als_iterations": 5, "als_threads": t}, seed=5).stage_one(prepared)
        for t in (1, 2)
    )
    assert one["user_factors"].shape[1] == SMALL["als_factors"]
    for key in ("user_factors", "item_factors"):
        np.testing.assert_array_equal(one[key], two[key], err_msg=key)


def test_top_ease_ranks_a_short_list_exactly(fitted: Fitted) -> None:
    """The EASE generator's short list (neighbours + head of the bias order) loses no item."""
    stage = fitted.scorer.stage_one
    for row in range(0, len(fitted.scorer.user_ids), 11):
        seen, ease, neighbours = stage.ease(row)
        blocked = np.zeros(stage.n_items, bool)
        blocked[seen] = True
        for n in (1, 5, 20):
            short = stage._top_ease(ease, seen, neighbours, blocked, n)
            full = _top_unblocked(ease, blocked, n)
            # the same scores (items may differ only among ties)
            assert sorted(ease[short].tolist()) == sorted(ease[full].tolist())
            assert not blocked[short].any()


def test_windows_stop_once_the_query_cap_is_drawn(prepared: td.Prepared) -> None:
    three = {**SMALL, "label_windows": 3, "label_fraction": 0.15}
    wide = RerankModel({**three, "max_rank_users": 100_000}, seed=5)
    _, _, _, stats = wide.training_groups(prepared)
    assert len(stats["windows"]) == 3
    newest = stats["windows"][0]["queries"]
    assert 0 < newest < sum(w["queries"] for w in stats["windows"])
    # a cap the newest window fills alone: no earlier window is fitted, no query beyond it
    capped = RerankModel({**three, "max_rank_users": newest}, seed=5)
    _, _, _, stats = capped.training_groups(prepared)
    assert [w["queries"] for w in stats["windows"]] == [newest]
    # a cap inside the second window: it is drawn from, the third is never fitted
    calls: list[int] = []
    between = RerankModel({**three, "max_rank_users": newest + 3}, seed=5)
    original = between.stage_one
    between.stage_one = lambda d: calls.append(1) or original(d)  # type: ignore[method-assign]
    _, _, _, stats = between.training_groups(prepared)
    assert [w["queries"] for w in stats["windows"]] == [newest, 3]
    assert len(calls) == 2


def test_completion_grades_follow_the_share_streamed() -> None:
    from services.trainer.models.rerank import grades

    rows = [
        (1, "a+", 0, 50),  # user 1 streams 50 + 45 of a's 100 minutes: 95 %, grade 3
        (1, "a+", 1, 45),
        (1, "b+", 2, 60),  # 60 %: 2
        (2, "b+", 3, 49),  # 49 %: 1
        (2, "c+", 4, 30),  # c has no runtime: its longest watch (user 3's 40) is its length
        (3, "c+", 5, 40),
    ]
    runtimes = pa.table(
        {"movie_id": ["a+", "b+", "c+"], "runtime": pa.array([100, 100, None], pa.float64())}
    )
    data = td.prepare(snapshot_tables(rows, [], runtimes), {}, 0.0, 0.0)
    n = data.n_items
    labels = data.train.pairs(n)
    pairs = [(int(data.user_ids[k // n]), str(data.item_ids[k % n])) for k in labels]
    assert pairs == [(1, "a+"), (1, "b+"), (2, "b+"), (2, "c+"), (3, "c+")]
    assert grades(data, labels, "completion").tolist() == [3.0, 2.0, 1.0, 2.0, 3.0]
    assert grades(data, labels, "watched").tolist() == [1.0] * 5
    with pytest.raises(ValueError, match="label_grade"):
        grades(data, labels, "minutes")


def test_graded_labels_train_the_ranker(prepared: td.Prepared) -> None:
    graded = RerankModel({**SMALL, "label_grade": "completion"}, seed=5)
    xs, ys, _, stats = graded.training_groups(prepared)
    labels = np.concatenate(ys)
    assert set(np.unique(labels).tolist()) == {0.0, 1.0, 2.0, 3.0}
    # the same queries and candidates as binary labels: only the grades of the hits differ
    same_xs, binary, _, same = RerankModel(SMALL, seed=5).training_groups(prepared)
    assert stats == same
    np.testing.assert_array_equal(np.vstack(xs), np.vstack(same_xs))
    np.testing.assert_array_equal(labels > 0, np.concatenate(binary) > 0)
    assert prepared.item_meta is not None
    assert "item_vote_average" in feature_names(prepared)
