"""Two-stage recommender: candidate generators, then a LightGBM lambdarank ranker.

Stage one (``services.common.scoring.Candidates``) proposes the top items by EASE, by
recency-weighted popularity, by the user's demographic segment and by genre affinity ×
popularity; each candidate carries the generators' scores (EASE, ALS, segment, genre affinity),
the movie's features (popularity, recency, year, mean rating, genres; where the snapshot has
the movie API's numbers, its vote average, vote count, popularity and runtime) and the user's
(age, gender, occupation: the user API; history length, recency, mainstreamness).

Stage two ranks them with LightGBM lambdarank, and its labels come strictly after its features:
the (user, movie) pairs that first appear in the training period's last ``label_fraction`` of
events are the labels, and stage one is fitted on the events before that window only (every
event of a label pair lies inside the window; ``label_windows`` > 1 adds the windows before it,
each with its own earlier features, for more training users, until ``max_rank_users`` queries
are drawn: a big world's newest window fills them alone).  ``label_grade: completion`` grades
a label by the share of the movie streamed (``grades``): what a user picks is mostly among
popular movies, how much of it they watch says how much they liked it, and online a list wins
by movies users like.  A seeded share of the label users early-stops the boosting.  Stage one
is then refitted on the whole training period, and the
ranker, trained on features of the same meaning, ranks its candidates.  So ``fit`` reads the
training period only: evaluated on validation, the model has never seen it; refitted on train +
validation (the report's protocol), its last window is the validation period, which trains and
early-stops the ranker while the test period only reports.

No pickle: the ranker is kept in LightGBM's own text format (``ranker.txt``, hashed in the
manifest like ``arrays.npz``); serving evaluates it with NumPy (``scoring.TreeEnsemble``, equal
to ``Booster.predict``), so the recommender does not need LightGBM.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from services.common.scoring import RANKER_FILE, RERANK_CROSS, Candidates
from services.trainer.data import META_COLUMNS, Period, Prepared
from services.trainer.models.base import (
    NS_PER_DAY,
    Arrays,
    ModelFamily,
    item_popularity,
    recency_votes,
    seen_arrays,
    users_with_train_data,
)
from services.trainer.util import extreme_per_key, limit_blas_threads

ITEM_FEATURES = (
    "log_viewers",  # first: the popularity the genre generator weights affinity by
    "recent_short",
    "recent_long",
    "year",
    "days_since_first",
    "days_since_last",
    "mean_rating",
)
META_FEATURES = ("vote_average", "log_vote_count", "log_api_popularity", "runtime")
"""The movie API's numbers (``data.META_COLUMNS``; counts logged), when the snapshot has them."""
USER_FEATURES = (
    "age",
    "gender",
    "occupation",
    "history",
    "days_since_last",
    "tenure_days",
    "mainstream",
)
NEVER_DAYS = 10_000.0
"""Days since an event that never happened (a movie nobody watched in training)."""
GENRE_POOL = 2000
"""The most popular items the genre generator picks from (every item in ML-100K's 1,682)."""
SLACK = 500
"""Extra entries in the precomputed recency and segment orders, for users who saw the top."""


def feature_names(data: Prepared) -> list[str]:
    """The ranker's feature names, in the column order of ``Candidates``."""
    genres = data.genre_names.tolist() if data.genre_names is not None else []
    clean = [re.sub(r"[^A-Za-z0-9_]", "_", str(g)) for g in genres]
    return [
        *RERANK_CROSS,
        *(f"item_{n}" for n in ITEM_FEATURES),
        *(f"item_{n}" for n in (META_FEATURES if data.item_meta is not None else ())),
        *(f"genre_{g}" for g in clean),
        *(f"user_{n}" for n in USER_FEATURES),
    ]


def _pair_first_times(per: Period, n_items: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[Any]]:
    """Unique (user, item) keys of a period and the first time each appears."""
    keys = np.concatenate(
        [
            per.inter_user.astype(np.int64) * n_items + per.inter_item,
            per.rate_user.astype(np.int64) * n_items + per.rate_item,
        ]
    )
    times = np.concatenate([per.inter_time, per.rate_time])
    return extreme_per_key(keys, times, latest=False)


def label_windows(
    data: Prepared, fraction: float, windows: int
) -> list[tuple[Prepared, npt.NDArray[np.int64], int]]:
    """(features, label pair keys, window start) per window, most recent first.

    Window w holds the pairs whose first event lies in the (w+1)-th last ``fraction`` of the
    training period's pairs (by first time); its features are every training event strictly
    before the window starts (a watch only when its last counted minute is before it too).
    """
    n = data.n_items
    keys, first = _pair_first_times(data.train, n)
    if len(keys) == 0:
        return []
    ordered = np.sort(first)
    out = []
    hi = int(ordered[-1]) + 1
    for w in range(windows):
        k = int(np.floor(len(ordered) * (1.0 - fraction * (w + 1))))
        if k <= 0:
            break
        lo = int(ordered[k])
        labels = keys[(first >= lo) & (first < hi)]
        tr = data.train
        feats = tr.select(tr.inter_last < lo, tr.rate_time < lo)
        empty = Period.empty()
        periods = {"train": feats, "val": empty, "test": empty}
        out.append((replace(data, periods=periods), labels, lo))
        hi = lo
    return out


def random_labels(
    data: Prepared, fraction: float, seed: int, folds: int = 1
) -> list[tuple[Prepared, npt.NDArray[np.int64], int]]:
    """(features, labels, 0) per fold: a seeded random ``fraction`` of each user's pairs.

    For protocols without time (the Recommenders' random 75/25 split): the labels are held out
    of the features exactly as its test part is held out of its training part; each fold draws
    its own labels.
    """
    return [_random_labels(data, fraction, seed + f) for f in range(folds)] if folds else []


def _random_labels(
    data: Prepared, fraction: float, seed: int
) -> tuple[Prepared, npt.NDArray[np.int64], int]:
    """One fold of ``random_labels``."""
    n = data.n_items
    keys = data.train.pairs(n)
    rng = np.random.default_rng(seed)
    users = keys // n
    order = np.lexsort((rng.random(len(keys)), users))
    starts = np.r_[0, np.flatnonzero(np.diff(users[order])) + 1]
    counts = np.diff(np.r_[starts, len(keys)])
    rank = np.arange(len(keys)) - np.repeat(starts, counts)
    held = np.zeros(len(keys), bool)
    held[order] = rank < np.repeat(np.floor(fraction * counts), counts)
    labels = keys[held]
    tr = data.train
    inter = ~np.isin(tr.inter_user.astype(np.int64) * n + tr.inter_item, labels)
    rate = ~np.isin(tr.rate_user.astype(np.int64) * n + tr.rate_item, labels)
    empty = Period.empty()
    periods = {"train": tr.select(inter, rate), "val": empty, "test": empty}
    return replace(data, periods=periods), labels, 0


def completion(data: Prepared) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Sorted (user, item) keys of the training watches and the share of the movie streamed.

    Minutes over the movie API's runtime; a movie without one counts its longest watch in the
    period as its length.  Capped at 1 (a rewatch streams the minutes again).
    """
    n = data.n_items
    tr = data.train
    pair = tr.inter_user.astype(np.int64) * n + tr.inter_item
    keys, inverse = np.unique(pair, return_inverse=True)
    minutes = np.bincount(inverse, tr.inter_minutes, minlength=len(keys))
    runtime = np.zeros(n)
    np.maximum.at(runtime, keys % n, minutes)
    if data.item_meta is not None:
        api = data.item_meta[:, META_COLUMNS.index("runtime")].astype(np.float64)
        runtime = np.where(np.isfinite(api) & (api > 0), api, runtime)
    share = np.minimum(minutes / np.maximum(runtime[keys % n], 1.0), 1.0)
    return keys, share


def grades(data: Prepared, labels: npt.NDArray[np.int64], how: str) -> npt.NDArray[np.float64]:
    """The relevance grade of each label pair (sorted keys): 1, or more for a stronger watch.

    ``watched``: every label is 1.  ``completion``: 1, 2 from half the movie streamed, 3 from
    90 % (``completion``; a pair only rated, never watched, is 1), so the ranker learns which
    movies users stay with, not only pick.
    """
    return _graded(_shares(data, how), labels)


def _shares(
    data: Prepared, how: str
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]] | None:
    """``completion(data)`` when labels are graded by it (``how``), else None."""
    if how not in ("watched", "completion"):
        raise ValueError(f"rerank: label_grade must be 'watched' or 'completion', not {how!r}")
    return completion(data) if how == "completion" else None


def _graded(
    shares: tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]] | None,
    labels: npt.NDArray[np.int64],
) -> npt.NDArray[np.float64]:
    """``grades`` from ``completion``'s (keys, share), computed once for every window; None: 1."""
    if shares is None or not len(shares[0]) or not len(labels):
        return np.ones(len(labels))
    keys, share = shares
    pos = np.minimum(np.searchsorted(keys, labels), len(keys) - 1)
    got = np.where(keys[pos] == labels, share[pos], 0.0)
    out: npt.NDArray[np.float64] = (1 + (got >= 0.5).astype(int) + (got >= 0.9)).astype(float)
    return out


def _normalized(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """``values`` / their maximum (zeros stay zeros)."""
    out: npt.NDArray[np.float64] = values / max(float(values.max(initial=0.0)), 1e-12)
    return out


class RerankModel(ModelFamily):
    """Candidates from EASE, ALS, popularity, segment and genre generators; lambdarank on top."""

    family: ClassVar[str] = "rerank"
    defaults: ClassVar[dict[str, Any]] = {
        # stage one: EASE (as models.ease), ALS (as models.als; 0 factors: none), recency,
        # segment popularity (as models.segment)
        "l2": 150.0,
        "neighbours": 300,
        "max_items": 5000,
        "als_factors": 32,
        "als_regularization": 5.0,
        "als_alpha": 2.0,
        "als_iterations": 15,
        "als_weighting": "bm25",
        "recent_half_life_days": 3.0,
        "long_half_life_days": 30.0,
        "segment_half_life_days": 7.0,
        "segment_shrinkage": 100.0,
        # candidates proposed by EASE, recency, segment and genre affinity
        "n_ease": 60,
        "n_recent": 30,
        "n_segment": 20,
        "n_genre": 20,
        # stage two: labels and LightGBM lambdarank
        "label_fraction": 0.111,  # with a 10 % validation period, train + val's last window is it
        "label_windows": 2,
        "label_split": "time",  # or "random": per user, for protocols without time
        "label_grade": "watched",  # or "completion": see ``grades``
        "max_rank_users": 20_000,
        "stop_share": 0.25,
        "learning_rate": 0.05,
        "num_leaves": 15,
        "max_depth": 5,
        "min_data_in_leaf": 100,
        "feature_fraction": 0.8,
        "lambda_l2": 10.0,
        "n_estimators": 150,
        "early_stopping": 30,
        "eval_at": 20,  # the list length early stopping measures NDCG at
        "threads": 1,  # LightGBM; more only oversubscribes a shared machine
        # ALS (0: every core): each row's least squares is solved on its own, so the factors
        # are the same bits whatever the thread count (checked in tests/trainer/test_rerank.py)
        "als_threads": 0,
    }

    def known_users(self, data: Prepared) -> npt.NDArray[np.bool_]:
        """Everyone who watched or rated something in training."""
        return users_with_train_data(data)

    # --- stage one -------------------------------------------------------------------------

    def stage_one(self, data: Prepared) -> Arrays:
        """Every array ``Candidates`` reads, fitted on ``data.train`` (its known users)."""
        from services.trainer.models.als import ALSModel
        from services.trainer.models.ease import EASEModel
        from services.trainer.models.segment import SegmentModel

        p = self.params
        known = users_with_train_data(data)
        arrays: Arrays = {"item_ids": data.item_ids.astype(str)}
        arrays.update(seen_arrays(data, known))
        ease = EASEModel(
            {k: p[k] for k in ("l2", "neighbours", "max_items")}, seed=self.seed
        ).family_arrays(data, known)
        arrays.update(ease)
        n_known = int(known.sum())
        if int(p["als_factors"]) > 0:
            als = ALSModel(
                {
                    "factors": p["als_factors"],
                    "regularization": p["als_regularization"],
                    "alpha": p["als_alpha"],
                    "iterations": p["als_iterations"],
                    "weighting": p["als_weighting"],
                    "threads": p["als_threads"],
                },
                seed=self.seed,
            ).family_arrays(data, known)
            arrays["user_factors"] = als["user_factors"]
            arrays["item_factors"] = als["item_factors"]
        else:
            arrays["user_factors"] = np.zeros((n_known, 0), np.float32)
            arrays["item_factors"] = np.zeros((data.n_items, 0), np.float32)
        seg = SegmentModel(
            {"half_life_days": p["segment_half_life_days"], "shrinkage": p["segment_shrinkage"]},
            seed=self.seed,
        ).family_arrays(data, known)
        arrays["segment_scores"] = seg["segment_scores"]
        arrays["user_segment"] = seg["user_segment"]
        arrays.update(self._features(data, known))
        sizes = [int(p[k]) for k in ("n_ease", "n_recent", "n_segment", "n_genre")]
        k_recent = min(data.n_items, sizes[1] + SLACK)
        k_segment = min(data.n_items, sizes[2] + SLACK)
        recent = arrays["item_features"][:, 1]
        arrays["recent_order"] = np.lexsort((np.arange(data.n_items), -recent))[:k_recent]
        arrays["segment_order"] = np.stack(
            [
                np.lexsort((np.arange(data.n_items), -recent, -row))[:k_segment]
                for row in seg["segment_scores"]
            ]
        ).astype(np.int32)
        arrays["recent_order"] = arrays["recent_order"].astype(np.int32)
        pool = np.lexsort((np.arange(data.n_items), -arrays["item_features"][:, 0]))
        arrays["genre_pool"] = np.sort(pool[: min(data.n_items, GENRE_POOL)]).astype(np.int32)
        arrays["candidate_sizes"] = np.asarray(sizes, np.int64)
        return arrays

    def _features(self, data: Prepared, known: npt.NDArray[np.bool_]) -> Arrays:
        """``item_features``, ``item_genres`` and ``user_features`` (see the module lists)."""
        p = self.params
        tr = data.train
        times = np.concatenate([tr.inter_time, tr.inter_last, tr.rate_time])
        end = int(times.max()) if len(times) else 0
        viewers = item_popularity(data)
        recent = []
        for hl in (p["recent_half_life_days"], p["long_half_life_days"]):
            _, items, weights = recency_votes(data, float(hl))
            votes = np.bincount(items, weights, minlength=data.n_items).astype(np.float64)
            recent.append(_normalized(votes))
        item_t = np.concatenate([tr.inter_item, tr.inter_item, tr.rate_item])
        first = np.full(data.n_items, np.iinfo(np.int64).max, np.int64)
        last = np.full(data.n_items, np.iinfo(np.int64).min, np.int64)
        np.minimum.at(first, item_t, times)
        np.maximum.at(last, item_t, times)
        seen_item = last > np.iinfo(np.int64).min
        days_first = np.where(seen_item, (end - first) / NS_PER_DAY, NEVER_DAYS)
        days_last = np.where(seen_item, (end - last) / NS_PER_DAY, NEVER_DAYS)
        n_r = np.bincount(tr.rate_item, minlength=data.n_items)
        s_r = np.bincount(tr.rate_item, tr.rate_value, minlength=data.n_items)
        mu = float(tr.rate_value.mean()) if len(tr.rate_value) else 0.0
        mean_rating = (s_r + 5.0 * mu) / (n_r + 5.0)  # shrunk toward the mean with 5 ratings
        year = (
            data.item_year.astype(np.float64)
            if data.item_year is not None
            else np.zeros(data.n_items)
        )
        genres = (
            data.item_genres.astype(np.float32)
            if data.item_genres is not None
            else np.zeros((data.n_items, 0), np.float32)
        )
        item_cols = [np.log1p(viewers), *recent, year, days_first, days_last, mean_rating]
        if data.item_meta is not None:
            vote_avg, votes, api_pop, runtime = data.item_meta.astype(np.float64).T
            with np.errstate(invalid="ignore"):  # a negative count is garbage: unknown too
                meta = [vote_avg, np.log1p(votes), np.log1p(api_pop), runtime]
            # unknown is -1, below every real value, not NaN: a NaN among a request's features
            # sends the served ranker down its slower missing-value path (1.2 ms against 0.7 ms
            # p50 at a million users, where the synthetic catalog has no votes)
            item_cols += [np.where(np.isfinite(c), c, -1.0) for c in meta]
        item_features = np.column_stack([*item_cols, genres]).astype(np.float32)

        users = np.flatnonzero(known)
        seen = data.seen_matrix("train")[users]
        history = np.diff(seen.indptr).astype(np.float64)
        log_pop = np.log1p(viewers)
        mainstream = (seen @ log_pop) / np.maximum(history, 1.0)
        user_t = np.concatenate([tr.inter_user, tr.inter_user, tr.rate_user])
        u_first = np.full(data.n_users, np.iinfo(np.int64).max, np.int64)
        u_last = np.full(data.n_users, np.iinfo(np.int64).min, np.int64)
        np.minimum.at(u_first, user_t, times)  # every known user has at least one event
        np.maximum.at(u_last, user_t, times)
        gender = np.select([data.gender == "F", data.gender == "M"], [0.0, 1.0], 0.5)
        occupation = np.full(data.n_users, -1.0)
        if data.occupation is not None:
            names = np.unique(data.occupation[data.occupation != ""])
            has = data.occupation != ""
            occupation[has] = np.searchsorted(names, data.occupation[has])
        user_features = np.column_stack(
            [
                data.age[users].astype(np.float64),
                gender[users],
                occupation[users],
                history,
                (end - u_last[users]) / NS_PER_DAY,
                (end - u_first[users]) / NS_PER_DAY,
                mainstream,
            ]
        ).astype(np.float32)
        return {
            "item_features": item_features,
            "item_genres": genres,
            "user_features": user_features,
        }

    # --- stage two -------------------------------------------------------------------------

    def training_groups(
        self, data: Prepared
    ) -> tuple[
        list[npt.NDArray[np.float64]], list[npt.NDArray[np.float64]], list[int], dict[str, Any]
    ]:
        """Features, labels and user of every ranker query (label windows, newest first)."""
        p = self.params
        rng = np.random.default_rng(self.seed)
        xs: list[npt.NDArray[np.float64]] = []
        ys: list[npt.NDArray[np.float64]] = []
        users: list[int] = []
        stats: dict[str, Any] = {"windows": [], "label_pairs": 0, "label_pairs_in_candidates": 0}
        n = data.n_items
        if p["label_split"] == "random":
            windows = random_labels(
                data, float(p["label_fraction"]), self.seed, int(p["label_windows"])
            )
        elif p["label_split"] == "time":
            windows = label_windows(data, float(p["label_fraction"]), int(p["label_windows"]))
        else:
            raise ValueError(
                f"rerank: label_split must be 'time' or 'random', not {p['label_split']!r}"
            )
        # the share of each training pair streamed, once: every window's labels look it up
        shares = _shares(data, str(p["label_grade"]))
        cap = int(p["max_rank_users"])
        queries = 0
        for feats, labels, start in windows:
            if queries >= cap:
                # enough queries already: an earlier window costs one more stage-one fit
                # (~75 s at a million users), so a big world stops after its newest window
                break
            arrays = self.stage_one(feats)
            cand = Candidates(arrays)
            label_users, starts = np.unique(labels // n, return_index=True)
            ends = np.r_[starts[1:], len(labels)]
            rows = np.searchsorted(arrays["user_ids"], data.user_ids[label_users])
            rows = np.minimum(rows, max(len(arrays["user_ids"]) - 1, 0))
            warm = (
                arrays["user_ids"][rows] == data.user_ids[label_users]
                if len(arrays["user_ids"])
                else np.zeros(len(label_users), bool)
            )
            picked = np.flatnonzero(warm)
            if len(picked) > cap - queries:
                picked = np.sort(rng.choice(picked, cap - queries, replace=False))
            queries += len(picked)
            found = total = 0
            gain = _graded(shares, labels)
            for j in picked.tolist():
                cands, x = cand(int(rows[j]))
                own = labels[starts[j] : ends[j]] % n  # sorted, never empty: a label user's
                hit = np.minimum(np.searchsorted(own, cands), len(own) - 1)
                ok = own[hit] == cands
                y = np.where(ok, gain[starts[j] + hit], 0.0)
                found += int(ok.sum())
                total += int(ends[j] - starts[j])
                if y.any():
                    xs.append(x)
                    ys.append(y)
                    users.append(int(label_users[j]))
            stats["windows"].append(
                {
                    "start_ns": start,
                    "label_users": len(label_users),
                    "warm_label_users": int(warm.sum()),
                    "queries": len(picked),
                    "candidate_recall": round(found / max(total, 1), 4),
                }
            )
            stats["label_pairs"] += total
            stats["label_pairs_in_candidates"] += found
        return xs, ys, users, stats

    def train_ranker(self, data: Prepared) -> str:
        """LightGBM lambdarank on the label windows; the model in LightGBM's text format."""
        import lightgbm as lgb

        p = self.params
        xs, ys, users, stats = self.training_groups(data)
        names = feature_names(data)
        if not xs:
            self.info = {"ranker": {**stats, "trees": 0}}
            return empty_model(names)
        # early-stopping users are held out whole (a user's windows never straddle the sets)
        distinct = np.unique(users)
        rng = np.random.default_rng(self.seed + 1)
        n_stop = round(len(distinct) * float(p["stop_share"]))
        stop_users = set(rng.choice(distinct, n_stop, replace=False).tolist()) if n_stop else set()
        fit = [i for i, u in enumerate(users) if u not in stop_users]
        stop = [i for i, u in enumerate(users) if u in stop_users]
        if not fit:
            fit, stop = stop, []

        def dataset(idx: list[int], reference: Any = None) -> Any:
            return lgb.Dataset(
                np.vstack([xs[i] for i in idx]),
                np.concatenate([ys[i] for i in idx]),
                group=[len(ys[i]) for i in idx],
                feature_name=names,
                reference=reference,
                free_raw_data=True,
            )

        train_set = dataset(fit)
        params = {
            "objective": "lambdarank",
            "metric": "ndcg",
            "eval_at": [int(p["eval_at"])],
            "learning_rate": float(p["learning_rate"]),
            "num_leaves": int(p["num_leaves"]),
            "max_depth": int(p["max_depth"]),
            "min_data_in_leaf": int(p["min_data_in_leaf"]),
            "feature_fraction": float(p["feature_fraction"]),
            "lambda_l2": float(p["lambda_l2"]),
            "seed": self.seed,
            "deterministic": True,
            "force_row_wise": True,
            "num_threads": max(int(p["threads"]), 1),
            "verbosity": -1,
        }
        if p["label_grade"] == "completion":
            # a finished watch gains 1 as every ungraded label does, a partial one less
            # (2^grade - 1, scaled): a source whose watches are all whole (ML-100K) trains the
            # same ranker graded or not
            params["label_gain"] = [(2.0**g - 1.0) / 7.0 for g in range(4)]
        callbacks: list[Any] = []
        valid = []
        if stop:
            valid = [dataset(stop, train_set)]
            callbacks = [lgb.early_stopping(int(p["early_stopping"]), verbose=False)]
        booster = lgb.train(
            params,
            train_set,
            num_boost_round=int(p["n_estimators"]),
            valid_sets=valid,
            callbacks=callbacks,
        )
        best = int(booster.best_iteration or booster.current_iteration())
        self.info = {
            "ranker": {
                **stats,
                "queries_fit": len(fit),
                "queries_stop": len(stop),
                "trees": best,
                "stop_ndcg": (
                    round(float(booster.best_score["valid_0"][f"ndcg@{p['eval_at']}"]), 5)
                    if stop
                    else None
                ),
            }
        }
        text: str = booster.model_to_string(num_iteration=best)
        return text

    def family_arrays(self, data: Prepared, known: npt.NDArray[np.bool_]) -> Arrays:
        """Train the ranker on the label windows, then stage one on the whole training period."""
        # one BLAS thread: several small inversions and products, on a machine ALS and
        # LightGBM already keep busy (threaded BLAS spins: 0.5 s for a 150² inverse, measured)
        with limit_blas_threads(1):
            self.texts = {RANKER_FILE: self.train_ranker(data)}
            arrays = self.stage_one(data)
        # the common arrays (ids, seen items, cold-start lists) come from ModelFamily.fit
        for key in ("item_ids", "user_ids", "seen_indptr", "seen_indices"):
            arrays.pop(key)
        return arrays


def empty_model(names: list[str]) -> str:
    """A LightGBM model text with no trees (every candidate scores 0; EASE breaks the ties)."""
    return "\n".join(
        [
            "tree",
            "version=v4",
            "num_class=1",
            "num_tree_per_iteration=1",
            "label_index=0",
            f"max_feature_idx={len(names) - 1}",
            "objective=lambdarank",
            "feature_names=" + " ".join(names),
            "feature_infos=" + " ".join("none" for _ in names),
            "tree_sizes=",
            "",
            "end of trees",
            "",
        ]
    )
