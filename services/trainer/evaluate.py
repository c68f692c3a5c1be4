"""Offline evaluation of artifacts on a held-out period, through the serving code (Scorer).

Rating accuracy (RMSE, MAE, overall and per gender and age group) for the families that
predict ratings; ranking on held-out watches (precision, recall, NDCG, hit rate at k) for all;
catalog coverage and popularity bias of the lists; and the costs: inference time per user over
the whole catalog, artifact size on disk and loaded in memory.
"""

from __future__ import annotations

import time
import tracemalloc
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from services.common.artifacts import load_artifact
from services.common.scoring import Scorer
from services.trainer.data import Prepared
from services.trainer.models.base import item_popularity, users_with_train_data
from services.trainer.util import limit_blas_threads, unique_ints

RATING_FAMILIES = ("svd", "knn")  # ease shares the graph arrays but predicts no ratings
F64 = npt.NDArray[np.float64]
_DERIVED: dict[int, dict[str, Any]] = {}


def _derived(data: Prepared, name: str, make: Callable[[], Any]) -> Any:
    """``make()`` once per ``data`` (every family and period of a run asks for the same)."""
    # per-user arrays over every training event take seconds each at a million users
    key = id(data)
    cache = _DERIVED.get(key)
    if cache is None:
        cache = _DERIVED[key] = {}
        weakref.finalize(data, _DERIVED.pop, key, None)
    if name not in cache:
        cache[name] = make()
    return cache[name]


def _rows(scorer: Scorer, data: Prepared, users: npt.NDArray[np.int32]) -> npt.NDArray[np.int64]:
    """Row of each (global) user index in the artifact, -1 for users it does not know."""
    ids = data.user_ids[users]
    pos = np.searchsorted(scorer.user_ids, ids)
    pos = np.minimum(pos, max(len(scorer.user_ids) - 1, 0))
    known = (scorer.user_ids[pos] == ids) if len(scorer.user_ids) else np.zeros(len(ids), bool)
    return np.where(known, pos, -1).astype(np.int64)


def predict_ratings(
    scorer: Scorer,
    arrays: dict[str, Any],
    data: Prepared,
    users: npt.NDArray[np.int32],
    items: npt.NDArray[np.int32],
) -> F64 | None:
    """Predicted ratings (clipped to 1..5) of (user, item) pairs; None for ranking-only models."""
    if scorer.family not in RATING_FAMILIES or len(users) == 0:
        return None
    rows = _rows(scorer, data, users)
    known = rows >= 0
    if scorer.family == "svd":
        pred = scorer.global_bias + scorer.item_bias[items].astype(np.float64)
        r = rows[known]
        pred[known] += scorer.user_bias[r] + np.einsum(
            "ij,ij->i", scorer.user_factors[r], scorer.item_factors[items[known]]
        )
    else:
        # KNNBaseline on the served graph: b_ui + Σ sim(j,i)·res_uj / Σ |sim(j,i)| over rated j
        user_bias = arrays["user_bias"].astype(np.float64)
        item_bias = arrays.get("rating_item_bias", scorer.item_bias)
        pred = scorer.global_bias + item_bias[items].astype(np.float64)
        pred[known] += user_bias[rows[known]]
        uniq, inv = np.unique(rows[known], return_inverse=True)
        if len(uniq):
            indptr = scorer.seen_indptr
            lens = indptr[uniq + 1] - indptr[uniq]
            take = np.repeat(indptr[uniq] - np.cumsum(lens) + lens, lens) + np.arange(lens.sum())
            rated = arrays["seen_rated"][take]
            w = sp.csr_matrix(
                (
                    np.where(rated, scorer.seen_weights[take], 0.0),
                    (np.repeat(np.arange(len(uniq)), lens), scorer.seen_indices[take]),
                ),
                shape=(len(uniq), scorer.n_items),
            )
            ind = sp.csr_matrix(
                (
                    rated.astype(np.float64),
                    (np.repeat(np.arange(len(uniq)), lens), scorer.seen_indices[take]),
                ),
                shape=(len(uniq), scorer.n_items),
            )
            graph = sp.csr_matrix(
                (scorer.knn_sims, scorer.knn_indices, scorer.knn_indptr),
                shape=(scorer.n_items, scorer.n_items),
            )
            num = (w @ graph).tocsr()
            den = (ind @ graph).tocsr()
            it = items[known]
            n = np.asarray(num[inv.reshape(-1), it]).reshape(-1)
            d = np.asarray(den[inv.reshape(-1), it]).reshape(-1)
            with np.errstate(divide="ignore", invalid="ignore"):
                pred[known] += np.where(d > 0, n / d, 0.0)
    out: F64 = np.clip(pred, 1.0, 5.0)
    return out


def rating_metrics(
    scorer: Scorer, arrays: dict[str, Any], data: Prepared, period: str
) -> dict[str, Any]:
    """RMSE and MAE overall, per gender and per age group (None when not applicable)."""
    per = data.periods[period]
    pred = predict_ratings(scorer, arrays, data, per.rate_user, per.rate_item)
    if pred is None:
        return {"rmse": None, "mae": None, "n": len(per.rate_value), "by_gender": {}, "by_age": {}}
    err = pred - per.rate_value

    def summary(mask: npt.NDArray[np.bool_]) -> dict[str, Any]:
        """RMSE, MAE and count of the errors where ``mask`` holds."""
        e = err[mask]
        if len(e) == 0:
            return {"rmse": None, "mae": None, "n": 0}
        return {
            "rmse": round(float(np.sqrt(np.mean(e**2))), 5),
            "mae": round(float(np.mean(np.abs(e))), 5),
            "n": len(e),
        }

    out = summary(np.ones(len(err), bool))
    gender = data.gender[per.rate_user]
    groups = _derived(data, "age_groups", data.age_groups)[per.rate_user]
    out["by_gender"] = {g: summary(gender == g) for g in sorted(set(gender.tolist()))}
    out["by_age"] = {a: summary(groups == a) for a in sorted(set(groups.tolist()))}
    return out


def held_out_users(data: Prepared, period: str, max_users: int, seed: int) -> npt.NDArray[np.int32]:
    """Users with held-out watches in ``period`` (a seeded sample of at most ``max_users``)."""
    per = data.periods[period]
    users = unique_ints(per.inter_user if len(per.inter_user) else per.rate_user)
    if max_users and len(users) > max_users:
        rng = np.random.default_rng(seed)
        users = np.sort(rng.choice(users, max_users, replace=False))
    return users.astype(np.int32)


def ranking_metrics(
    scorer: Scorer,
    data: Prepared,
    period: str,
    k: int,
    max_users: int,
    seed: int,
    per_user: dict[str, F64] | None = None,
) -> dict[str, Any]:
    """precision/recall/NDCG/hit rate@k on held-out watches, coverage and popularity bias.

    Also split by history length and demographic group with bootstrap CIs (``breakdown``);
    ``per_user``, when given, receives the per-user arrays (for paired comparisons).
    """
    per = data.periods[period]
    u_all = per.inter_user if len(per.inter_user) else per.rate_user
    i_all = per.inter_item if len(per.inter_item) else per.rate_item
    users = held_out_users(data, period, max_users, seed)
    empty = {
        f"precision@{k}": None,
        f"recall@{k}": None,
        f"ndcg@{k}": None,
        f"hit_rate@{k}": None,
        "users": 0,
    }
    if len(users) == 0:
        return empty
    order = np.argsort(u_all, kind="stable")
    u_sorted, i_sorted = u_all[order], i_all[order]
    lo = np.searchsorted(u_sorted, users, "left")
    hi = np.searchsorted(u_sorted, users, "right")
    segments = _derived(data, "segments", data.segments)
    index = {str(m): n for n, m in enumerate(scorer.item_ids)}
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    prec, rec, ndcg, hit = (np.zeros(len(users)) for _ in range(4))
    personalized = 0
    # users with any training history (cold-start users are those without): same set for all models
    has_history = _derived(data, "known", lambda: users_with_train_data(data))[users]
    recommended = np.zeros(scorer.n_items, np.int64)
    for n, u in enumerate(users):
        ids, pers = scorer.recommend(int(data.user_ids[u]), k, True, str(segments[u]))
        personalized += int(pers)
        recs = np.array([index[m] for m in ids], np.int64)
        recommended[recs] += 1
        relevant = i_sorted[lo[n] : hi[n]]
        hits = np.isin(recs, relevant)
        h = int(hits.sum())
        prec[n] = h / k
        rec[n] = h / len(relevant)
        ideal = discounts[: min(len(relevant), k)].sum()
        ndcg[n] = float((hits * discounts[: len(recs)]).sum() / ideal)
        hit[n] = float(h > 0)
    pop = _derived(data, "popularity", lambda: item_popularity(data))
    # percentile of each item in training popularity: 1.0 = the most watched movie
    pct = np.empty(len(pop))
    pct[np.argsort(pop, kind="stable")] = np.arange(1, len(pop) + 1) / len(pop)
    shown = recommended > 0
    head = pct >= 0.8
    arrays: dict[str, F64] = {"ndcg": ndcg, "recall": rec, "hit": hit, "precision": prec}
    if per_user is not None:
        per_user.update(arrays, users=users.astype(np.float64))
    total = max(int(recommended.sum()), 1)
    return {
        f"precision@{k}": round(float(prec.mean()), 5),
        f"recall@{k}": round(float(rec.mean()), 5),
        f"ndcg@{k}": round(float(ndcg.mean()), 5),
        f"hit_rate@{k}": round(float(hit.mean()), 5),
        "users": len(users),
        "personalized_share": round(personalized / len(users), 4),
        # the same measures split by whether the user had any training history (cold start)
        "users_with_history": int(has_history.sum()),
        f"ndcg@{k}_with_history": _mean(ndcg[has_history]),
        f"recall@{k}_with_history": _mean(rec[has_history]),
        f"ndcg@{k}_cold": _mean(ndcg[~has_history]),
        "coverage": round(float(shown.sum() / max(scorer.n_items, 1)), 5),
        "mean_popularity_percentile": round(float((recommended * pct).sum() / total), 4),
        "long_tail_share": round(float(recommended[~head].sum() / total), 4),
        "breakdown": breakdown(arrays, data, users, k, seed),
    }


HISTORY_BUCKETS = (("0", 0, 0), ("1-3", 1, 3), ("4-10", 4, 10), (">10", 11, None))
"""Training-history lengths (distinct movies watched or rated) the report splits users by."""


def history_lengths(data: Prepared) -> npt.NDArray[np.int64]:
    """Distinct movies each user watched or rated in the training period."""
    keys = data.train.pairs(data.n_items)
    out: npt.NDArray[np.int64] = np.bincount(keys // data.n_items, minlength=data.n_users)
    return out


def bootstrap_ci(
    values: F64, seed: int, resamples: int = 1000, level: float = 0.95
) -> list[float] | None:
    """Percentile bootstrap interval of the mean of per-user ``values`` (resampling users)."""
    if len(values) < 2:
        return None
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for r in range(resamples):
        means[r] = values[rng.integers(0, len(values), len(values))].mean()
    tail = (1.0 - level) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return [round(float(lo), 5), round(float(hi), 5)]


def paired_ratio_ci(
    a: F64, b: F64, seed: int, resamples: int = 1000, level: float = 0.95
) -> dict[str, Any]:
    """mean(a)/mean(b) over the same users, with a paired bootstrap interval (None if b is 0)."""
    if len(a) != len(b) or len(a) < 2 or b.mean() == 0:
        return {"ratio": None, "ci95": None}
    rng = np.random.default_rng(seed)
    ratios = np.empty(resamples)
    for r in range(resamples):
        idx = rng.integers(0, len(a), len(a))
        den = b[idx].mean()
        ratios[r] = a[idx].mean() / den if den > 0 else np.nan
    tail = (1.0 - level) / 2 * 100
    lo, hi = np.nanpercentile(ratios, [tail, 100 - tail])
    return {
        "ratio": round(float(a.mean() / b.mean()), 4),
        "ci95": [round(float(lo), 4), round(float(hi), 4)],
    }


def breakdown(
    per_user: dict[str, F64], data: Prepared, users: npt.NDArray[np.int32], k: int, seed: int
) -> dict[str, Any]:
    """Metrics by history length and demographic group, and bootstrap CIs over users."""
    ndcg = per_user["ndcg"]
    lengths = _derived(data, "history", lambda: history_lengths(data))[users]
    warm = lengths > 0

    def cell(mask: npt.NDArray[np.bool_]) -> dict[str, Any]:
        return {
            "users": int(mask.sum()),
            f"ndcg@{k}": _mean(ndcg[mask]),
            f"recall@{k}": _mean(per_user["recall"][mask]),
            f"hit_rate@{k}": _mean(per_user["hit"][mask]),
        }

    by_history = {}
    for name, lo, hi in HISTORY_BUCKETS:
        mask = (lengths >= lo) & (lengths <= hi) if hi is not None else lengths >= lo
        by_history[name] = cell(mask)
    gender = data.gender[users]
    groups = _derived(data, "age_groups", data.age_groups)[users]
    return {
        f"ndcg@{k}_ci95": bootstrap_ci(ndcg, seed),
        f"ndcg@{k}_with_history_ci95": bootstrap_ci(ndcg[warm], seed),
        f"ndcg@{k}_cold_ci95": bootstrap_ci(ndcg[~warm], seed),
        "by_history": by_history,
        "by_gender": {g: cell(gender == g) for g in sorted(set(gender.tolist()))},
        "by_age": {a: cell(groups == a) for a in sorted(set(groups.tolist()))},
    }


def _mean(values: F64) -> float | None:
    """Rounded mean, or None for no values."""
    return round(float(values.mean()), 5) if len(values) else None


def inference_cost(scorer: Scorer, k: int, max_users: int, seed: int) -> dict[str, Any]:
    """Time of one top-k over the whole catalog for known users (mean and p95, ms)."""
    n = len(scorer.user_ids)
    if n == 0:
        return {"infer_ms_mean": None, "infer_ms_p95": None}
    rng = np.random.default_rng(seed)
    rows = rng.choice(n, min(n, max_users), replace=False)
    times = np.empty(len(rows))
    for j, r in enumerate(rows):
        t = time.perf_counter()
        scorer.top_k_indices(int(r), k, True)
        times[j] = time.perf_counter() - t
    return {
        "infer_ms_mean": round(float(times.mean() * 1e3), 4),
        "infer_ms_p95": round(float(np.percentile(times, 95) * 1e3), 4),
    }


def load_cost(artifact_dir: Path) -> tuple[Scorer, dict[str, Any], dict[str, Any]]:
    """Load an artifact, measuring its size on disk and the memory it takes once loaded."""
    tracemalloc.start()
    try:
        artifact = load_artifact(artifact_dir)
        scorer = Scorer(artifact)
        _, peak = tracemalloc.get_traced_memory()
        current, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    cost = {
        "artifact_bytes": sum((artifact_dir / f).stat().st_size for f in artifact.manifest.files),
        "loaded_bytes": int(current),
        "load_peak_bytes": int(peak),
    }
    return scorer, artifact.arrays, cost


def evaluate_artifact(
    artifact_dir: Path,
    data: Prepared,
    *,
    k: int = 20,
    max_users: int = 5000,
    timing_users: int = 300,
    seed: int = 0,
    periods: tuple[str, ...] = ("val", "test"),
) -> dict[str, Any]:
    """Every offline measure of one artifact, per held-out period."""
    scorer, arrays, cost = load_cost(artifact_dir)
    out: dict[str, Any] = {"family": scorer.family, **cost}
    # one BLAS thread, as a serving worker should run: threaded BLAS on a single matrix-vector
    # product is many times slower on a shared machine (measured: 15 ms vs 0.5 ms at 27K × 64)
    with limit_blas_threads(1):
        out.update(inference_cost(scorer, k, timing_users, seed))
        for period in periods:
            out[period] = {
                "rating": rating_metrics(scorer, arrays, data, period),
                "ranking": ranking_metrics(scorer, data, period, k, max_users, seed),
            }
    return out
