"""MovieLens 100K: Surprise's protocol reproduced; the pipeline runs on the real data."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.trainer import cli
from services.trainer.surprise_protocol import PUBLISHED, surprise_protocol


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
