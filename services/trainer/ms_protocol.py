"""The Microsoft Recommenders ML-100K protocol, so our numbers stand beside its published table.

Its benchmark splits every user's ratings at random, 75 % train / 25 % test (a per-user
stratified split, as ``python_stratified_split``), treats every rating as a positive, ranks the
catalog minus the user's training items and reports top-10 precision, recall, NDCG (binary
relevance) and MAP (average precision over the user's relevant items).  Parameters are chosen
on an inner split of the training part only (the same 75/25 per user), then the winner is
refitted on the whole training part and the test part is scored once.  Models are our own
families, fitted and ranked through the serving code (``services.common.scoring.Scorer``).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from services.common.movies import read_movielens_items
from services.trainer.data import Period, Prepared
from services.trainer.study import grid

log = logging.getLogger("marquee.trainer")
PUBLISHED = {
    "SAR": {"precision@10": 0.331},
    "BPR": {"precision@10": 0.388},
    "BiVAE": {"precision@10": 0.412},
}
"""P@10 of the Recommenders benchmark table on ML-100K (same split, k = 10)."""
GRIDS: dict[str, dict[str, list[Any]]] = {
    "popularity": {"half_life_days": [0.0]},
    "ease": {
        "l2": [200.0, 300.0, 400.0, 500.0, 700.0, 1000.0],
        "neighbours": [2000],
        # all-time popularity (half-life 0) subtracted: a small push toward the long tail
        "prior_weight": [0.0, -0.05],
        "prior_half_life_days": [0.0],
    },
    "als": {
        "weighting": ["log", "bm25"],
        "factors": [64, 200],
        "regularization": [1.0, 50.0],
        "alpha": [5.0, 20.0],
        "iterations": [15],
        "threads": [1],
    },
    "rerank": {
        # labels: 4 folds of a random 25 % of each user's training ratings (the protocol's own
        # split, one level down); EASE and ALS as tuned here, NDCG@10 early stopping
        "label_split": ["random"],
        "label_fraction": [0.25],
        "label_windows": [4],
        "l2": [500.0],
        "neighbours": [2000],
        "n_ease": [80, 100],
        "als_factors": [32],
        "als_regularization": [50.0],
        "als_alpha": [20.0],
        "als_weighting": ["log"],
        "min_data_in_leaf": [50, 100],
        "eval_at": [10],
        "n_estimators": [300],
        "learning_rate": [0.05],
    },
}
I32 = npt.NDArray[np.int32]


def read_ratings(ml_dir: Path | str) -> dict[str, npt.NDArray[Any]]:
    """u.data as arrays (user, item: 0-based indices; rating; time) and u.user demographics."""
    base = Path(ml_dir)
    raw = np.loadtxt(base / "u.data", dtype=np.int64, ndmin=2)
    users = [
        line.split("|") for line in (base / "u.user").read_text("latin-1").splitlines() if line
    ]
    items = read_movielens_items(base)  # the movie API's fields: genres and year
    names = np.array(sorted({g for it in items for g in it.genres}), dtype=str)
    n_items = max(it.ml_id for it in items)
    genres = np.zeros((n_items, len(names)), np.uint8)
    year = np.zeros(n_items, np.int16)
    for it in items:
        genres[it.ml_id - 1, np.searchsorted(names, list(it.genres))] = 1
        year[it.ml_id - 1] = it.year or 0
    return {
        "user": (raw[:, 0] - 1).astype(np.int32),
        "item": (raw[:, 1] - 1).astype(np.int32),
        "rating": raw[:, 2].astype(np.float32),
        "time": raw[:, 3] * 1_000_000_000,
        "age": np.array([int(u[1]) for u in users], np.int16),
        "gender": np.array([u[2] for u in users]),
        "occupation": np.array([u[3] for u in users]),
        "item_genres": genres,
        "item_year": year,
        "genre_names": names,
    }


def stratified_split(user: I32, ratio: float, seed: int) -> npt.NDArray[np.bool_]:
    """True for the training rows: per user, a random ``round(ratio × n)`` of their rows."""
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.random(len(user)), user))  # each user's rows, shuffled
    sorted_users = user[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_users)) + 1]
    counts = np.diff(np.r_[starts, len(user)])
    rank = np.arange(len(user)) - np.repeat(starts, counts)
    train = np.zeros(len(user), bool)
    train[order] = rank < np.repeat(np.round(ratio * counts), counts)
    return train


def as_prepared(
    d: dict[str, npt.NDArray[Any]], train: npt.NDArray[np.bool_], test: npt.NDArray[np.bool_]
) -> Prepared:
    """The rows as a Prepared (train and test periods), every rating a watch."""

    def period(mask: npt.NDArray[np.bool_]) -> Period:
        u, i, r, t = d["user"][mask], d["item"][mask], d["rating"][mask], d["time"][mask]
        return Period(u, i, np.ones(len(u), np.float32), t, t, u, i, r, t)

    n_users, n_items = len(d["age"]), int(d["item"].max()) + 1
    year, genres, names = d.get("item_year"), d.get("item_genres"), d.get("genre_names")
    return Prepared(
        item_ids=np.array([str(i + 1) for i in range(n_items)]),
        user_ids=np.arange(1, n_users + 1, dtype=np.int64),
        gender=d["gender"].astype("<U1"),
        age=d["age"],
        periods={"train": period(train), "val": Period.empty(), "test": period(test)},
        info={"snapshot": {}, "cutoffs_ns": {}, "counts": {}},
        occupation=d.get("occupation"),
        item_year=None if year is None else year[:n_items],
        item_genres=None if genres is None else genres[:n_items],
        genre_names=names,
    )


def topk_metrics(
    recs: list[npt.NDArray[np.int64]], relevant: list[npt.NDArray[np.int32]], k: int
) -> dict[str, float]:
    """Mean precision, recall, NDCG (binary) and MAP at k over users (lists best first)."""
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    out = np.zeros((len(recs), 4))
    for n, (r, rel) in enumerate(zip(recs, relevant, strict=True)):
        hits = np.isin(r[:k], rel).astype(np.float64)
        n_rel = len(rel)
        ideal = discounts[: min(n_rel, k)].sum()
        precision_at = np.cumsum(hits) / np.arange(1, len(hits) + 1)
        out[n] = (
            hits.sum() / k,
            hits.sum() / n_rel,
            (hits * discounts[: len(hits)]).sum() / ideal,
            (precision_at * hits).sum() / n_rel,
        )
    mean = out.mean(axis=0)
    return {
        f"{m}@{k}": round(float(v), 5)
        for m, v in zip(("precision", "recall", "ndcg", "map"), mean, strict=True)
    }


def rank_lists(
    family: str, params: dict[str, Any], data: Prepared, k: int, seed: int
) -> tuple[list[npt.NDArray[np.int64]], list[npt.NDArray[np.int32]]]:
    """Fit on ``data.train``; top-k (training items excluded) and relevant items per test user."""
    from services.trainer.models import FAMILIES

    scorer = FAMILIES[family](params, seed=seed).fit(data).scorer
    test = data.periods["test"]
    order = np.argsort(test.rate_user, kind="stable")
    users, starts = np.unique(test.rate_user[order], return_index=True)
    ends = np.r_[starts[1:], len(order)]
    recs, relevant = [], []
    for u, lo, hi in zip(users.tolist(), starts.tolist(), ends.tolist(), strict=True):
        row = scorer.user_index(int(data.user_ids[u]))
        if row is None:
            top = scorer.popular[:k].astype(np.int64)
        else:
            top = scorer.top_k_indices(row, k, True)
        recs.append(top)
        relevant.append(test.rate_item[order[lo:hi]])
    return recs, relevant


def ms_protocol(
    ml_dir: Path | str, families: list[str], k: int = 10, seed: int = 42
) -> dict[str, Any]:
    """Tune on an inner split of the 75 %, refit on it, score the 25 % once: per family."""
    d = read_ratings(ml_dir)
    train = stratified_split(d["user"], 0.75, seed)
    outer = as_prepared(d, train, ~train)
    inner_train = np.zeros(len(train), bool)
    inner_train[np.flatnonzero(train)] = stratified_split(d["user"][train], 0.75, seed + 1)
    inner = as_prepared(d, inner_train, train & ~inner_train)
    results: dict[str, Any] = {}
    for family in families:
        trials = []
        for params in grid(GRIDS.get(family, {})) or [{}]:
            m = topk_metrics(*rank_lists(family, params, inner, k, seed), k)
            trials.append({"params": params, "inner": m})
        best = max(trials, key=lambda t: t["inner"][f"precision@{k}"])["params"]
        started = time.perf_counter()
        test = topk_metrics(*rank_lists(family, best, outer, k, seed), k)
        results[family] = {
            "params": best,
            "test": test,
            "trials": trials,
            "fit_and_rank_seconds": round(time.perf_counter() - started, 2),
        }
        log.info("ms protocol", extra={"family": family, **test})
    return {
        "protocol": "Microsoft Recommenders ML-100K: per-user stratified random 75/25, k=10",
        "seed": seed,
        "ratings": {"train": int(train.sum()), "test": int((~train).sum())},
        "models": results,
        "published": PUBLISHED,
    }
