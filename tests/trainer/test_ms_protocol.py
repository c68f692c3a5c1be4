"""The Microsoft Recommenders protocol: its split, and our metric code against ranx's."""

from __future__ import annotations

import numpy as np
import pytest

from services.trainer.ms_protocol import (
    as_prepared,
    rank_lists,
    read_ratings,
    stratified_split,
    topk_metrics,
)


@pytest.mark.slow  # ranx compiles its metrics with numba on first use (~15-70 s)
def test_metrics_match_ranx_on_the_same_lists() -> None:
    ranx = pytest.importorskip("ranx")
    rng = np.random.default_rng(5)
    recs, relevant, qrels, run = [], [], {}, {}
    for u in range(60):
        ranked = rng.permutation(200)[:10].astype(np.int64)
        rel = rng.choice(200, int(rng.integers(1, 40)), replace=False).astype(np.int32)
        # some users hit often: overlap the list with the relevant items on purpose
        if u % 3 == 0:
            rel = np.unique(np.r_[rel, ranked[rng.random(10) < 0.5]]).astype(np.int32)
        recs.append(ranked)
        relevant.append(rel)
        qrels[f"u{u}"] = {f"i{i}": 1 for i in rel.tolist()}
        run[f"u{u}"] = {f"i{i}": float(10 - pos) for pos, i in enumerate(ranked.tolist())}
    theirs = ranx.evaluate(
        ranx.Qrels(qrels), ranx.Run(run), ["precision@10", "recall@10", "ndcg@10", "map@10"]
    )
    ours = topk_metrics(recs, relevant, 10)
    for metric, value in theirs.items():
        assert ours[metric] == pytest.approx(value, abs=1e-5), metric
    assert ours["precision@10"] > 0.05  # the lists do hit: the comparison is not all zeros


def test_stratified_split_is_per_user_and_seeded() -> None:
    users = np.repeat(np.arange(5, dtype=np.int32), [4, 10, 21, 1, 7])
    a = stratified_split(users, 0.75, 1)
    assert np.array_equal(a, stratified_split(users, 0.75, 1))
    assert not np.array_equal(a, stratified_split(users, 0.75, 2))
    for u, n in enumerate([4, 10, 21, 1, 7]):
        assert a[users == u].sum() == round(0.75 * n)


def test_ml100k_split_keeps_every_user_and_ranks_through_the_scorer(ml100k: str) -> None:
    d = read_ratings(ml100k)
    train = stratified_split(d["user"], 0.75, 42)
    assert abs(train.mean() - 0.75) < 0.01
    assert set(d["user"][train].tolist()) == set(d["user"][~train].tolist())  # all users in both
    data = as_prepared(d, train, ~train)
    recs, relevant = rank_lists("popularity", {}, data, 10, 0)
    assert len(recs) == 943 and all(len(r) == 10 for r in recs)
    seen = data.seen_matrix("train")
    first_user_seen = set(seen[0].indices.tolist())
    assert first_user_seen.isdisjoint(recs[0].tolist())  # training items are never recommended
    assert 0.05 < topk_metrics(recs, relevant, 10)["precision@10"] < 0.5
