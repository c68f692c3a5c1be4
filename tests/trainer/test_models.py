"""The model families: serving conventions, determinism, round trip, safety, edge cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from surprise import SVD

from services.common.artifacts import ArtifactError, load_artifact, write_artifact
from services.common.scoring import Scorer
from services.trainer import data as td
from services.trainer import synthetic
from services.trainer.evaluate import predict_ratings
from services.trainer.models import FAMILIES, KNNModel, SVDModel
from services.trainer.models.knn import baselines, topk_similarities
from services.trainer.models.svd import surprise_trainset
from tests.infra import import_or_skip

SMALL = {
    "svd": {"n_factors": 8, "n_epochs": 5},
    "knn": {"k": 10},
    "popularity": {},
    "als": {"factors": 8, "iterations": 3, "threads": 1},
    "bpr": {"factors": 8, "iterations": 5, "threads": 1},
    "ease": {"l2": 50.0, "max_items": 100, "neighbours": 20},
    "segment": {"half_life_days": 30.0},
    "rerank": {
        "l2": 50.0,
        "max_items": 100,
        "neighbours": 20,
        "als_factors": 4,
        "als_iterations": 3,
        "n_estimators": 10,
        "min_data_in_leaf": 20,
    },
}


@pytest.fixture(scope="module")
def fitted(prepared: td.Prepared) -> dict[str, object]:
    return {f: cls(SMALL[f], seed=7).fit(prepared) for f, cls in FAMILIES.items()}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_arrays_follow_scoring_conventions(
    fitted: dict, prepared: td.Prepared, family: str
) -> None:
    f = fitted[family]
    a = f.arrays
    scorer = f.scorer  # Scorer validates the required arrays
    assert scorer.family == family
    assert a["item_ids"].tolist() == prepared.item_ids.tolist()
    assert np.all(np.diff(a["user_ids"]) > 0)
    assert a["seen_indptr"].dtype == np.int64 and a["seen_indices"].dtype == np.int32
    assert len(a["seen_indptr"]) == len(a["user_ids"]) + 1
    assert a["popular"].dtype == np.int32 and len(set(a["popular"].tolist())) == len(a["popular"])
    assert a["segment_popular"].shape == (len(a["segment_keys"]), len(a["popular"]))
    for key in (
        "user_factors",
        "item_factors",
        "user_bias",
        "item_bias",
        "global_bias",
        "knn_sims",
    ):
        if key in a:
            assert a[key].dtype == np.float32
    if family == "knn":
        assert len(a["seen_weights"]) == len(a["seen_indices"])
        assert a["knn_indptr"][-1] == len(a["knn_indices"]) == len(a["knn_sims"])
        assert len(a["knn_sims"]) <= 10 * prepared.n_items  # bounded: k per item
    user = int(a["user_ids"][0])
    recs = f.recommend(user, 10)
    assert len(recs) == 10 == len(set(recs))
    seen = set(prepared.item_ids[scorer.seen(0)].tolist())
    assert seen.isdisjoint(recs)
    scores = f.score(user, recs[:3])
    assert np.all(np.isfinite(scores))


def test_no_held_out_pair_is_seen_in_training(fitted: dict, prepared: td.Prepared) -> None:
    test = prepared.periods["test"]
    n = prepared.n_items
    held = set((test.inter_user.astype(np.int64) * n + test.inter_item).tolist())
    for f in fitted.values():
        a = f.arrays
        rows = np.searchsorted(prepared.user_ids, a["user_ids"])
        users = np.repeat(rows, np.diff(a["seen_indptr"]))
        seen = set((users.astype(np.int64) * n + a["seen_indices"]).tolist())
        assert seen.isdisjoint(held)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_deterministic_with_a_seed(
    prepared: td.Prepared, fitted: dict, family: str, tmp_path: Path
) -> None:
    again = FAMILIES[family](SMALL[family], seed=7).fit(prepared)
    a = write_artifact(
        tmp_path / "a",
        name=family,
        family=family,
        arrays=fitted[family].arrays,
        params=again.params,
        snapshot={},
        texts=fitted[family].texts,
    )
    b = write_artifact(
        tmp_path / "b",
        name=family,
        family=family,
        arrays=again.arrays,
        params=again.params,
        snapshot={},
        created="x",
        texts=again.texts,
    )
    assert a.version == b.version


def test_round_trip_gives_identical_recommendations(
    fitted: dict, prepared: td.Prepared, tmp_path: Path
) -> None:
    users = [int(u) for u in prepared.user_ids[::25]] + [10**9]
    for family, f in fitted.items():
        write_artifact(
            tmp_path / family,
            name=family,
            family=family,
            arrays=f.arrays,
            params=f.params,
            snapshot={},
            texts=f.texts,
        )
        loaded = Scorer(load_artifact(tmp_path / family))
        for u in users:
            assert loaded.recommend(u, 20) == f.scorer.recommend(u, 20)


def test_tampered_artifact_is_refused(fitted: dict, tmp_path: Path) -> None:
    f = fitted["svd"]
    write_artifact(
        tmp_path / "m", name="svd", family="svd", arrays=f.arrays, params=f.params, snapshot={}
    )
    path = tmp_path / "m" / "arrays.npz"
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(ArtifactError, match="sha256"):
        load_artifact(tmp_path / "m")


def test_unknown_users_get_their_segment_list(fitted: dict) -> None:
    f = fitted["als"]
    key = str(f.arrays["segment_keys"][0])
    ids, personalized = f.scorer.recommend(10**12, 5, True, key)
    assert not personalized
    assert ids == f.arrays["item_ids"][f.arrays["segment_popular"][0][:5]].tolist()


def test_svd_export_matches_surprise(prepared: td.Prepared) -> None:
    tr = prepared.train
    params = {"n_factors": 5, "n_epochs": 3}
    fitted = SVDModel(params, seed=1).fit(prepared)
    trainset, uidx, iidx = surprise_trainset(tr.rate_user, tr.rate_item, tr.rate_value)
    algo = SVD(random_state=1, **params).fit(trainset)
    users, items = tr.rate_user[:50], tr.rate_item[:50]
    ours = predict_ratings(fitted.scorer, fitted.arrays, prepared, users, items)
    theirs = [
        algo.predict(int(np.searchsorted(uidx, u)), int(np.searchsorted(iidx, i)), clip=True).est
        for u, i in zip(users, items, strict=True)
    ]
    # surprise's predict takes raw ids; ours are the inner ids here, so map explicitly
    theirs = [
        np.clip(
            algo.trainset.global_mean
            + algo.bu[np.searchsorted(uidx, u)]
            + algo.bi[np.searchsorted(iidx, i)]
            + algo.qi[np.searchsorted(iidx, i)] @ algo.pu[np.searchsorted(uidx, u)],
            1,
            5,
        )
        for u, i in zip(users, items, strict=True)
    ]
    assert ours is not None
    np.testing.assert_allclose(ours, theirs, atol=1e-4)


def test_knn_blocks_match_dense_similarity() -> None:
    rng = np.random.default_rng(0)
    n_users, n_items = 40, 25
    keys = np.unique(rng.integers(0, n_users * n_items, 400))
    users, items = (x.astype(np.int32) for x in np.divmod(keys, n_items))
    ratings = rng.integers(1, 6, len(keys)).astype(np.float32)
    mu, bu, bi = baselines(users, items, ratings, n_users, n_items)
    res = ratings - (mu + bu[users] + bi[items])
    indptr, _, sims = topk_similarities(
        users, items, res, n_users, n_items, k=5, shrinkage=10, block=7
    )
    dense_r = np.zeros((n_users, n_items))
    dense_b = np.zeros((n_users, n_items))
    dense_r[users, items] = res
    dense_b[users, items] = 1
    for i in range(n_items):
        row = {}
        for j in range(n_items):
            common = (dense_b[:, i] > 0) & (dense_b[:, j] > 0)
            if i == j or common.sum() == 0:
                continue
            x, y = dense_r[common, i], dense_r[common, j]
            den = np.sqrt((x**2).sum() * (y**2).sum())
            s = (x * y).sum() / den if den > 0 else 0.0
            n = common.sum()
            row[j] = s * (n - 1) / (n - 1 + 10)
        best = sorted((v for v in row.values() if v > 0), reverse=True)[:5]
        got = sorted(sims[indptr[i] : indptr[i + 1]].tolist(), reverse=True)
        np.testing.assert_allclose(got, best[: len(got)], rtol=1e-4)
        assert len(got) == len(best)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_degenerate_data(family: str) -> None:
    # one user, a handful of movies; and a world with no ratings at all
    tables, _ = synthetic.generate(n_users=1, n_items=6, mean_watches=4, seed=2)
    p = td.prepare(tables, {}, 0.0, 0.0)
    f = FAMILIES[family](SMALL[family], seed=1).fit(p)
    user = int(p.user_ids[0])
    recs = f.recommend(user, 3)
    assert len(recs) == 3
    assert f.recommend(999, 3)  # unknown user: cold start
    no_ratings = {**tables, "ratings": tables["ratings"].slice(0, 0)}
    p2 = td.prepare(no_ratings, {}, 0.0, 0.0)
    f2 = FAMILIES[family](SMALL[family], seed=1).fit(p2)
    assert len(f2.recommend(user, 3)) == 3


def test_knn_k_bounds_memory(prepared: td.Prepared) -> None:
    small = KNNModel({"k": 3}, seed=0).fit(prepared).arrays
    large = KNNModel({"k": 30}, seed=0).fit(prepared).arrays
    assert len(small["knn_sims"]) <= 3 * prepared.n_items
    assert len(small["knn_sims"]) < len(large["knn_sims"]) <= 30 * prepared.n_items


def test_knn_cosine_matches_dense() -> None:
    rng = np.random.default_rng(1)
    n_users, n_items = 30, 12
    keys = np.unique(rng.integers(0, n_users * n_items, 150))
    users, items = (x.astype(np.int32) for x in np.divmod(keys, n_items))
    indptr, indices, sims = topk_similarities(
        users, items, np.ones(len(keys)), n_users, n_items, k=4, shrinkage=5, block=5, kind="cosine"
    )
    b = np.zeros((n_users, n_items))
    b[users, items] = 1
    co = b.T @ b
    norm = np.sqrt(np.diag(co))
    dense = co / np.outer(norm, norm) * co / (co + 5)
    np.fill_diagonal(dense, 0)
    for i in range(n_items):
        best = sorted((v for v in dense[i] if v > 0), reverse=True)[:4]
        got = sorted(sims[indptr[i] : indptr[i + 1]].tolist(), reverse=True)
        np.testing.assert_allclose(got, best, rtol=1e-5)
        assert set(indices[indptr[i] : indptr[i + 1]].tolist()) <= set(np.flatnonzero(dense[i] > 0))


def test_no_pickle_in_the_trainer() -> None:
    root = Path(__file__).resolve().parents[2] / "services" / "trainer"
    for path in root.rglob("*.py"):
        text = path.read_text()
        assert "import pickle" not in text and "allow_pickle=True" not in text, path
        assert "joblib" not in text and "dump_algo" not in text, path


@pytest.mark.parametrize("family", list(FAMILIES))
def test_the_recommender_accepts_every_family(fitted: dict, family: str, tmp_path: Path) -> None:
    model = import_or_skip("services.recommender.model")
    from services.common.artifacts import Registry

    f = fitted[family]
    write_artifact(
        tmp_path / "a",
        name=family,
        family=family,
        arrays=f.arrays,
        params=f.params,
        snapshot={},
        texts=f.texts,
    )
    registry = Registry(tmp_path / "models")
    registry.register(tmp_path / "a", "canary")
    loaded = model.load_model(registry, family, "canary")  # sha256, array checks, warm-up
    assert loaded.family == family


def test_ease_graph_is_the_closed_form_when_nothing_is_cut(prepared: td.Prepared) -> None:
    from services.trainer.models import EASEModel

    l2 = 30.0
    f = EASEModel({"l2": l2, "max_items": 10_000, "neighbours": 10_000}, seed=0).fit(prepared)
    s = f.scorer
    x = prepared.seen_matrix("train")[np.searchsorted(prepared.user_ids, s.user_ids)].toarray()
    watched = np.flatnonzero(x.sum(axis=0) > 0)
    g = x[:, watched].T @ x[:, watched] + l2 * np.eye(len(watched))
    p = np.linalg.inv(g)
    b = -p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    expected = np.zeros(prepared.n_items)
    for u in (0, 5, 17):
        expected[:] = 0.0
        expected[watched] = x[u, watched] @ b
        got = s.scores(u) - s.item_bias  # the bias is only the popularity tie-break
        np.testing.assert_allclose(got, expected, atol=1e-4)
    assert np.all(s.item_bias < 1e-3)


def test_ease_without_a_ridge_on_a_singular_gram_raises_a_clear_error() -> None:
    """Cholesky fails on a singular Gram with l2 = 0: a LinAlgError naming l2, not garbage."""
    from services.trainer.models.ease import ease_weights

    x = np.array([[1.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # item 1: never watched
    with pytest.raises(np.linalg.LinAlgError, match="raise l2"):
        ease_weights(x.T @ x, 0.0)
    b = ease_weights(x.T @ x, 1.0)  # any ridge makes it positive definite
    p = np.linalg.inv(x.T @ x + np.eye(3))
    np.testing.assert_allclose(b, np.where(np.eye(3) == 1, 0.0, -p / np.diag(p)[None, :]))


def test_ease_caps_items_and_neighbours(prepared: td.Prepared) -> None:
    from services.trainer.models import EASEModel

    a = EASEModel({"max_items": 20, "neighbours": 5}, seed=0).fit(prepared).arrays
    rows = np.diff(a["knn_indptr"])
    assert (rows > 0).sum() <= 20 and rows.max() <= 5  # only the 20 most popular have weights
    assert len(np.unique(a["knn_indices"])) <= 20


def test_bm25_weighting_matches_implicit() -> None:
    import scipy.sparse as sp
    from implicit.nearest_neighbours import bm25_weight

    from services.trainer.models.als import bm25

    rng = np.random.default_rng(3)
    m = sp.random(30, 40, density=0.2, random_state=4, format="csr", dtype=np.float64)
    m.data = rng.integers(1, 5, m.nnz).astype(np.float64)
    ours = bm25(m, 50.0, 0.7).toarray()
    theirs = bm25_weight(m.T.tocoo(), K1=50.0, B=0.7).T.toarray()
    np.testing.assert_allclose(ours, theirs, rtol=1e-5)


def test_als_bm25_is_trained_and_unknown_weighting_refused(prepared: td.Prepared) -> None:
    base = {"factors": 8, "iterations": 3, "threads": 1}
    log_f = FAMILIES["als"](base, seed=1).fit(prepared).arrays["item_factors"]
    bm_f = FAMILIES["als"]({**base, "weighting": "bm25"}, seed=1).fit(prepared).arrays
    assert not np.allclose(log_f, bm_f["item_factors"])
    with pytest.raises(ValueError, match="weighting"):
        FAMILIES["als"]({**base, "weighting": "tfidf"}, seed=1).fit(prepared)


def test_segment_scores_are_each_users_segment(prepared: td.Prepared) -> None:
    f = FAMILIES["segment"]({"shrinkage": 0.0}, seed=0).fit(prepared)
    s = f.scorer
    segs = prepared.segments()
    keys = f.arrays["segment_keys"].tolist()
    for row in (0, 3, 9):
        uid = int(s.user_ids[row])
        seg = segs[np.searchsorted(prepared.user_ids, uid)]
        np.testing.assert_array_equal(s.scores(row), f.arrays["segment_scores"][keys.index(seg)])
    # an unknown user gets the same segment's list, from the artifact's cold-start lists
    seg = str(keys[0])
    cold, personalized = s.recommend(10**9, 5, segment=seg)
    assert not personalized and cold == s.ids(s.segments[seg][:5])
    # overwhelming shrinkage: every segment's list follows overall popularity
    g = FAMILIES["segment"]({"shrinkage": 1e12}, seed=0).fit(prepared).arrays
    overall = g["segment_scores"].mean(axis=0)
    for r in g["segment_popular"]:
        assert np.all(np.diff(overall[r]) <= 1e-9)


def test_recency_prior_adds_exactly_to_the_item_bias(prepared: td.Prepared) -> None:
    from services.trainer.models.base import recency_prior

    plain = FAMILIES["ease"](SMALL["ease"], seed=0).fit(prepared).arrays["item_bias"]
    params = {**SMALL["ease"], "prior_weight": 0.5, "prior_half_life_days": 7.0}
    with_prior = FAMILIES["ease"](params, seed=0).fit(prepared).arrays["item_bias"]
    np.testing.assert_allclose(with_prior - plain, recency_prior(prepared, 0.5, 7.0), atol=1e-6)
    assert recency_prior(prepared, 0.5, 7.0).max() == pytest.approx(0.5)


def test_cold_start_lists_follow_recency_and_shrinkage(prepared: td.Prepared) -> None:
    from services.trainer.models.base import cold_start_arrays

    plain = cold_start_arrays(prepared, 20)
    assert np.array_equal(plain["popular"], cold_start_arrays(prepared, 20, 0.0, 0.0)["popular"])
    recent = cold_start_arrays(prepared, 20, 0.5, 0.0)
    assert not np.array_equal(plain["popular"], recent["popular"])  # a short half-life reorders
    shrunk = cold_start_arrays(prepared, 20, 0.0, 1e12)
    counts = np.bincount(prepared.train.pairs(prepared.n_items) % prepared.n_items)
    for r in shrunk["segment_popular"]:  # ordered by overall popularity
        assert np.all(np.diff(counts[r]) <= 0)
