"""MovieLens 100K: Surprise's protocol reproduced, tuning scored by nested CV, the pipeline runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from services.trainer import cli
from services.trainer.surprise_protocol import (
    PUBLISHED,
    kfold_indices,
    nested_folds,
    surprise_protocol,
    tune,
)


@pytest.mark.slow
def test_surprise_protocol_reproduces_the_published_svd(ml100k: str) -> None:
    res = surprise_protocol(ml100k, seed=0)
    assert abs(res["rmse"] - PUBLISHED["SVD"]["rmse"]) <= 0.01
    assert abs(res["mae"] - PUBLISHED["SVD"]["mae"]) <= 0.01


@pytest.mark.slow
def test_pipeline_on_movielens(ml100k: str, tmp_path: Path) -> None:
    import json

    code = cli.main(
        [
            "--movielens",
            ml100k,
            "--no-surprise-protocol",
            "--knn-k",
            "10,40",
            "--reports",
            str(tmp_path / "r"),
            "--registry",
            str(tmp_path / "models"),
            "--register",
            "canary",
        ]
    )
    assert code == 0
    doc = json.loads((tmp_path / "r" / "evaluation.json").read_text())
    svd = doc["models"]["svd"]["test"]["rating"]
    assert 0.9 < svd["rmse"] < 1.1  # temporal hold-out is harder than random folds
    assert set(svd["by_gender"]) == {"F", "M"}
    assert doc["models"]["als"]["test"]["rating"]["rmse"] is None
    assert [(r["similarity"], r["k"]) for r in doc["knn_memory"]] == [
        ("cosine", 10),
        ("cosine", 40),
        ("pearson_baseline", 10),
        ("pearson_baseline", 40),
    ]
    assert doc["knn_memory"][0]["graph_bytes"] < doc["knn_memory"][1]["graph_bytes"]


def test_nested_folds_never_select_on_the_scored_ratings() -> None:
    n = 103
    folds = nested_folds(n, outer=5, inner=3, seed=4)
    tests = np.concatenate([test for _, test, _ in folds])
    assert sorted(tests.tolist()) == list(range(n))  # the outer test folds partition the data
    for train, test, inner in folds:
        assert not set(train.tolist()) & set(test.tolist())
        assert len(inner) == 3
        for fit, validate in inner:
            chosen_on = set(fit.tolist()) | set(validate.tolist())
            assert chosen_on <= set(train.tolist())
            assert not chosen_on & set(test.tolist())


def _tiny_ml(tmp_path: Path, n_users: int = 30, n_items: int = 20, seed: int = 0) -> Path:
    """A u.data with a little structure, for quick tuning runs."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(1, n_users + 1):
        for i in rng.choice(np.arange(1, n_items + 1), 8, replace=False):
            rows.append(f"{u}\t{i}\t{1 + (u * int(i)) % 5}\t{880000000 + len(rows)}")
    (tmp_path / "u.data").write_text("\n".join(rows) + "\n")
    return tmp_path


def test_outer_folds_are_the_surprise_protocol_folds(tmp_path: Path) -> None:
    from surprise.model_selection import KFold

    from services.trainer.surprise_protocol import _dataset

    data = _dataset(_tiny_ml(tmp_path))
    ours = kfold_indices(len(data.raw_ratings), 5, seed=7)
    theirs = KFold(n_splits=5, random_state=7, shuffle=True).split(data)
    for (_, test), (_, testset) in zip(ours, theirs, strict=True):
        assert [data.raw_ratings[i][:3] for i in test] == [(u, i, float(r)) for u, i, r in testset]


def test_tuning_reports_only_ratings_no_choice_saw(tmp_path: Path) -> None:
    grid = [{"n_factors": 2, "n_epochs": 2}, {"n_factors": 4, "n_epochs": 5}]
    res = tune(_tiny_ml(tmp_path), seed=1, grid=grid, outer=3, inner=2)
    assert res["selection"].startswith("nested CV")
    assert len(res["folds"]) == 3
    for fold in res["folds"]:
        assert fold["chosen"] in grid and len(fold["inner_rmse"]) == 2
        assert fold["selected_on"] + fold["scored_on"] == 240
    assert res["most_chosen"] in grid
    assert res["rmse"] == round(float(np.mean([f["rmse"] for f in res["folds"]])), 4)
