"""services.common.scoring: vectorized top-k equals brute force for every family."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.common.artifacts import Artifact, Manifest
from services.common.scoring import (
    FACTOR_FAMILIES,
    FAMILIES,
    GRAPH_FAMILIES,
    NON_PERSONAL,
    Scorer,
    age_group,
    segment_key,
)

N_USERS, N_ITEMS, N_FACTORS, SEEN = 40, 60, 8, 6
# rerank needs a trained ranker (LightGBM's text format): its serving path is checked against
# LightGBM itself in tests/trainer/test_rerank.py
ARRAY_FAMILIES = [f for f in FAMILIES if f != "rerank"]


def arrays_for(family: str, seed: int = 0) -> dict[str, npt.NDArray[Any]]:
    """Small random arrays in scoring.py's conventions (users 10, 20, …)."""
    rng = np.random.default_rng(seed)
    seen = np.stack([np.sort(rng.choice(N_ITEMS, SEEN, replace=False)) for _ in range(N_USERS)])
    item_bias = rng.standard_normal(N_ITEMS).astype(np.float32)
    a: dict[str, npt.NDArray[Any]] = {
        "item_ids": np.array([f"movie+{i}+2000" for i in range(N_ITEMS)]),
        "user_ids": np.arange(1, N_USERS + 1, dtype=np.int64) * 10,
        "seen_indptr": np.arange(N_USERS + 1, dtype=np.int64) * SEEN,
        "seen_indices": seen.reshape(-1).astype(np.int32),
        "popular": np.argsort(-item_bias).astype(np.int32),
        "segment_keys": np.array(["F|teen", "M|senior"]),
        "segment_popular": np.stack([rng.permutation(N_ITEMS) for _ in range(2)]).astype(np.int32),
    }
    if family in FACTOR_FAMILIES:
        a |= {
            "user_factors": rng.standard_normal((N_USERS, N_FACTORS)).astype(np.float32),
            "item_factors": rng.standard_normal((N_ITEMS, N_FACTORS)).astype(np.float32),
            "user_bias": rng.standard_normal(N_USERS).astype(np.float32),
            "item_bias": item_bias,
            "global_bias": np.array([3.0], dtype=np.float32),
        }
    elif family in GRAPH_FAMILIES:
        k = 7
        nbrs = np.stack([rng.choice(N_ITEMS, k, replace=False) for _ in range(N_ITEMS)])
        a |= {
            "knn_indptr": np.arange(N_ITEMS + 1, dtype=np.int64) * k,
            "knn_indices": nbrs.reshape(-1).astype(np.int32),
            "knn_sims": rng.random(N_ITEMS * k).astype(np.float32),
            "seen_weights": rng.standard_normal(N_USERS * SEEN).astype(np.float32),
            "item_bias": item_bias,
            "global_bias": np.array([3.0], dtype=np.float32),
        }
    elif family == "segment":
        a["segment_scores"] = rng.standard_normal((2, N_ITEMS)).astype(np.float32)
        a["user_segment"] = rng.integers(0, 2, N_USERS).astype(np.int32)
    else:
        a["item_scores"] = item_bias.copy()
    return a


def scorer_for(family: str, arrays: dict[str, npt.NDArray[Any]] | None = None) -> Scorer:
    """A Scorer over in-memory arrays (no files needed)."""
    m = Manifest(
        name="t", family=family, version="v1", created="", git_sha="g", snapshot={},
        params={}, metrics={}, files={},
    )  # fmt: skip
    return Scorer(Artifact(manifest=m, arrays=arrays or arrays_for(family), path=Path(".")))


def naive_scores(family: str, a: dict[str, npt.NDArray[Any]], u: int) -> npt.NDArray[np.float64]:
    """Score every item one at a time, the slow obvious way."""
    out = np.zeros(N_ITEMS)
    seen = a["seen_indices"][a["seen_indptr"][u] : a["seen_indptr"][u + 1]]
    for i in range(N_ITEMS):
        if family in FACTOR_FAMILIES:
            out[i] = (
                a["global_bias"][0] + a["user_bias"][u] + a["item_bias"][i]
                + float(np.dot(a["user_factors"][u], a["item_factors"][i]))
            )  # fmt: skip
        elif family in GRAPH_FAMILIES:
            s = a["global_bias"][0] + a["item_bias"][i]
            for pos, j in enumerate(seen):
                lo, hi = a["knn_indptr"][j], a["knn_indptr"][j + 1]
                for p in range(lo, hi):
                    if a["knn_indices"][p] == i:
                        s += a["seen_weights"][a["seen_indptr"][u] + pos] * a["knn_sims"][p]
            out[i] = s
        elif family == "segment":
            out[i] = a["segment_scores"][a["user_segment"][u], i]
        else:
            out[i] = a["item_scores"][i]
    return out


@pytest.mark.parametrize("family", ARRAY_FAMILIES)
def test_scores_match_naive(family: str) -> None:
    a = arrays_for(family)
    s = scorer_for(family, a)
    for u in (0, 7, N_USERS - 1):
        np.testing.assert_allclose(s.scores(u), naive_scores(family, a, u), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", ARRAY_FAMILIES)
def test_top_k_is_brute_force_top_k_without_seen(family: str) -> None:
    a = arrays_for(family, seed=1)
    s = scorer_for(family, a)
    for u in range(N_USERS):
        full = s.scores(u)
        seen = set(s.seen(u).tolist())
        best = s.top_k_indices(u, 20).tolist()
        assert not seen & set(best)
        assert len(best) == len(set(best)) == 20
        expected = sorted((i for i in range(N_ITEMS) if i not in seen), key=lambda i: -full[i])
        np.testing.assert_allclose(full[best], full[expected[:20]], rtol=1e-6)


@pytest.mark.parametrize("family", ARRAY_FAMILIES)
def test_recommend_known_and_unknown_users(family: str) -> None:
    s = scorer_for(family)
    ids, personalized = s.recommend(10, 20)
    assert len(ids) == len(set(ids)) == 20
    assert all(isinstance(m, str) for m in ids)
    assert personalized == (family not in NON_PERSONAL)
    cold, personalized = s.recommend(15, 20)  # 15 is not a user id
    assert not personalized
    assert cold == s.ids(s.popular[:20])


def test_cold_start_segments() -> None:
    s = scorer_for("svd")
    teen, _ = s.recommend(999, 20, segment=segment_key("F", 15))
    assert teen == s.ids(s.segments["F|teen"][:20])
    other, _ = s.recommend(999, 20, segment=segment_key("M", 30))  # no such segment
    assert other == s.ids(s.popular[:20])


def test_short_lists_are_topped_up_from_popularity() -> None:
    a = arrays_for("svd")
    s = scorer_for("svd", a)
    ids, _ = s.recommend(10, N_ITEMS)  # more than the user has not seen
    assert len(ids) == len(set(ids)) == N_ITEMS - SEEN
    assert not set(ids) & set(s.ids(s.seen(0)))


def test_nan_scores_never_displace_real_ones() -> None:
    a = arrays_for("svd")
    a["item_factors"][:5] = np.nan
    s = scorer_for("svd", a)
    best = s.top_k_indices(3, 20)
    assert not set(best.tolist()) & set(range(5))
    assert np.all(np.isfinite(s.scores(3)[best]))


def test_duplicate_popularity_entries_are_removed() -> None:
    a = arrays_for("popularity")
    a["popular"] = np.array([3, 3, 1, 3, 2, 1, 0], dtype=np.int32)
    s = scorer_for("popularity", a)
    assert s.popular.tolist() == [3, 1, 2, 0]


@settings(max_examples=40, deadline=None)
@given(k=st.integers(min_value=0, max_value=N_ITEMS + 5), user=st.integers(0, N_USERS - 1))
def test_top_k_length_and_order(k: int, user: int) -> None:
    s = scorer_for("svd")
    best = s.top_k_indices(user, k, exclude_seen=False)
    assert len(best) == min(k, N_ITEMS)
    sc = s.scores(user)[best]
    assert np.all(sc[:-1] >= sc[1:])


def test_age_groups() -> None:
    assert [age_group(a) for a in (None, -1, 5, 13, 20, 36, 56, 300)] == [
        "unknown", "unknown", "child", "teen", "young_adult", "middle_aged", "senior", "unknown",
    ]  # fmt: skip
