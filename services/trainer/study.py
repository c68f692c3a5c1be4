"""The honest temporal protocol: tune on validation, refit on train + validation, test once.

For each family a seeded Optuna search (``SPACES``, TPE) fits the training period and scores
the validation period only (the cold-start lists' parameters are chosen once, on a grid); the
winner's parameters are refitted on train + validation and the test period is scored once,
per user, so every comparison is paired over the same users with a bootstrap interval.  The
strongest non-personalized lists (recency-weighted popularity with a tuned half-life,
demographic-segment popularity) are baselines beside all-time popularity, and warm users (with
training history) are reported apart from cold ones, who get a segment list from every model.
"""

from __future__ import annotations

import itertools
import logging
from typing import Any

import numpy as np

from services.common.scoring import NON_PERSONAL
from services.trainer.data import Prepared
from services.trainer.evaluate import F64, paired_ratio_ci, ranking_metrics

log = logging.getLogger("marquee.trainer")

COLD = {"cold_half_life_days": [0.0, 30.0], "cold_shrinkage": [0.0, 50.0]}
"""The cold-start lists' grid, searched once (they are the same for every family but segment)."""
Space = dict[str, Any]
SPACES: dict[str, Space] = {
    # a name maps to a list (categorical), or ("float"|"int", low, high[, "log"])
    "popularity": {"half_life_days": ("float", 0.5, 120.0, "log")},
    "segment": {
        "half_life_days": ("float", 0.5, 120.0, "log"),
        "shrinkage": ("float", 1.0, 300.0, "log"),
    },
    "ease": {
        "l2": ("float", 20.0, 2000.0, "log"),
        "neighbours": [300],
        "prior_weight": ("float", 0.0, 6.0),
        "prior_half_life_days": ("float", 1.0, 90.0, "log"),
    },
    "als": {
        "weighting": ["log", "bm25"],
        "factors": [32, 64],
        "regularization": ("float", 0.05, 20.0, "log"),
        "alpha": ("float", 0.5, 20.0, "log"),
        "iterations": [15],
        "threads": [1],  # reproducible and no oversubscription
        "prior_weight": ("float", 0.0, 6.0),
        "prior_half_life_days": ("float", 1.0, 90.0, "log"),
    },
    "bpr": {
        "factors": [32, 64],
        "learning_rate": ("float", 0.005, 0.1, "log"),
        "regularization": ("float", 0.0005, 0.05, "log"),
        "iterations": [100],
        "threads": [1],  # parallel SGD is not reproducible
        "prior_weight": ("float", 0.0, 6.0),
        "prior_half_life_days": ("float", 1.0, 90.0, "log"),
    },
    "rerank": {
        "l2": ("float", 50.0, 1000.0, "log"),
        "n_ease": ("int", 30, 80),  # bounded: every candidate costs serving time
        "recent_half_life_days": ("float", 1.0, 30.0, "log"),
        "label_windows": ("int", 1, 3),
        "learning_rate": ("float", 0.02, 0.2, "log"),
        "num_leaves": ("int", 4, 31),
        "min_data_in_leaf": ("int", 20, 300, "log"),
        "lambda_l2": ("float", 0.1, 100.0, "log"),
    },
}
START: dict[str, dict[str, Any]] = {
    # the first trial of each search: what earlier tuning chose (params.yaml)
    "popularity": {"half_life_days": 3.0},
    "segment": {"half_life_days": 7.0, "shrinkage": 100.0},
    "ease": {"l2": 150.0, "neighbours": 300, "prior_weight": 2.0, "prior_half_life_days": 3.0},
    "rerank": {
        "l2": 120.0,
        "n_ease": 80,
        "recent_half_life_days": 4.0,
        "label_windows": 3,
        "learning_rate": 0.065,
        "num_leaves": 13,
        "min_data_in_leaf": 250,
        "lambda_l2": 1.2,
    },
}
TRIALS: dict[str, int] = {"popularity": 8, "segment": 12, "ease": 20, "als": 16, "bpr": 10}
"""Trials per family by default (``rerank``: ``DEFAULT_TRIALS``)."""
DEFAULT_TRIALS = 12


def grid(space: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of the space's values, in a fixed order."""
    keys = sorted(space)
    return [
        dict(zip(keys, values, strict=True))
        for values in itertools.product(*(space[k] for k in keys))
    ]


def _score(
    family: str, params: dict[str, Any], data: Prepared, period: str, k: int, seed: int
) -> tuple[dict[str, Any], dict[str, F64]]:
    """Fit ``family`` on ``data.train`` and rank ``period``'s users (all of them)."""
    from services.trainer.models import FAMILIES

    fitted = FAMILIES[family](params, seed=seed).fit(data)
    per_user: dict[str, F64] = {}
    metrics = ranking_metrics(fitted.scorer, data, period, k, 0, seed, per_user)
    if fitted.info:
        metrics["fit"] = fitted.info  # e.g. the ranker's training set, for the report
    return metrics, per_user


def _val(metrics: dict[str, Any], key: str) -> dict[str, Any]:
    """The validation numbers a trial keeps: overall, warm and cold users."""
    return {m: metrics[m] for m in (key, f"{key}_with_history", f"{key}_cold")}


def _suggest(trial: Any, space: Space) -> dict[str, Any]:
    """One point of ``space`` from an Optuna trial."""
    out: dict[str, Any] = {}
    for name in sorted(space):
        spec = space[name]
        if isinstance(spec, list):
            out[name] = spec[0] if len(spec) == 1 else trial.suggest_categorical(name, spec)
        elif spec[0] == "float":
            out[name] = trial.suggest_float(name, spec[1], spec[2], log="log" in spec[3:])
        else:
            out[name] = trial.suggest_int(name, spec[1], spec[2], log="log" in spec[3:])
    return out


def tune_cold(data: Prepared, k: int = 20, seed: int = 0) -> dict[str, Any]:
    """The cold-start lists' parameters, by all-time popularity's validation NDCG (a grid)."""
    key = f"ndcg@{k}"
    trials = []
    for params in grid(COLD):
        metrics, _ = _score("popularity", params, data, "val", k, seed)
        trials.append({"params": params, "val": _val(metrics, key)})
    best = max(trials, key=lambda t: t["val"][key] or 0.0)
    return {"best": best["params"], "trials": trials}


def tune(
    family: str,
    data: Prepared,
    k: int = 20,
    seed: int = 0,
    n_trials: int | None = None,
    cold: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Optuna (TPE, seeded, sequential) on the validation period: every trial and the best.

    Each trial fits the family on the training period and scores the validation period's
    users; the cold-start list parameters ``cold`` are fixed (``tune_cold``).  The search
    starts from ``START`` and is deterministic for a seed, as the families' fits are.
    """
    import optuna

    key = f"ndcg@{k}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = SPACES[family]
    trials: list[dict[str, Any]] = []

    def objective(trial: Any) -> float:
        params = {**_suggest(trial, space), **(cold or {})}
        metrics, _ = _score(family, params, data, "val", k, seed)
        # no timings: the study file is the same bytes for the same seed and data
        trials.append({"number": trial.number, "params": params, "val": _val(metrics, key)})
        return float(metrics[key] or 0.0)

    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=5)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    start = {n: v for n, v in START.get(family, {}).items() if n in space}
    if start:
        study.enqueue_trial(start)
    study.optimize(objective, n_trials=n_trials or TRIALS.get(family, DEFAULT_TRIALS))
    chosen = trials[study.best_trial.number]
    log.info("tuned", extra={"family": family, "params": chosen["params"]})
    return {"family": family, "best": chosen["params"], "val": chosen["val"], "trials": trials}


def temporal_study(
    data: Prepared,
    families: list[str],
    k: int = 20,
    seed: int = 0,
    fixed: dict[str, dict[str, Any]] | None = None,
    trials: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Tune each family on validation, refit on train + validation, score the test once.

    ``fixed`` gives parameters for families without a search space (e.g. from ``params.yaml``);
    ``trials`` the number of trials per family (else ``TRIALS``).
    Also scores all-time popularity (the usual baseline) and reports, paired over the test
    users: the best model (chosen on validation) against all-time popularity, and on warm users
    the best personalized model against the best non-personalized list.
    """
    key = f"ndcg@{k}"
    tuning: dict[str, dict[str, Any]] = {}
    cold = tune_cold(data, k, seed)
    for f in families:
        if f in SPACES:
            tuning[f] = tune(f, data, k, seed, (trials or {}).get(f), cold["best"])
        else:
            params = {**(fixed or {}).get(f, {}), **cold["best"]}
            metrics, _ = _score(f, params, data, "val", k, seed)
            tuning[f] = {"family": f, "best": params, "val": _val(metrics, key)}
    refit = data.with_validation_in_train()
    test: dict[str, Any] = {}
    per_user: dict[str, dict[str, F64]] = {}
    runs = {f: tuning[f]["best"] for f in families} | {"popularity_all_time": {}}
    for name, params in runs.items():
        family = "popularity" if name == "popularity_all_time" else name
        metrics, per_user[name] = _score(family, params, refit, "test", k, seed)
        test[name] = metrics
    warm = history_mask(refit, per_user["popularity_all_time"]["users"])

    def best_by(names: list[str], field: str) -> str:
        return max(names, key=lambda f: tuning[f]["val"].get(field) or 0.0)

    personal = [f for f in families if f not in NON_PERSONAL]
    baselines = [f for f in families if f in NON_PERSONAL]
    best = best_by(families, key)
    summary: dict[str, Any] = {
        "best_on_validation": best,
        "best_vs_all_time_popularity": paired_ratio_ci(
            per_user[best]["ndcg"], per_user["popularity_all_time"]["ndcg"], seed
        ),
    }
    if personal and baselines:
        bp = best_by(personal, f"{key}_with_history")
        bn = best_by(baselines, f"{key}_with_history")
        summary["warm_best_personalized"] = bp
        summary["warm_best_non_personalized"] = bn
        summary["warm_personalized_vs_non_personalized"] = paired_ratio_ci(
            per_user[bp]["ndcg"][warm], per_user[bn]["ndcg"][warm], seed
        )
    return {
        "k": k,
        "seed": seed,
        "split": {kk: v for kk, v in data.info.items() if kk != "snapshot"},
        "test_users": len(warm),
        "test_users_with_history": int(warm.sum()),
        "cold_tuning": cold,
        "tuning": tuning,
        "test": test,
        "summary": summary,
    }


def history_mask(data: Prepared, users: F64) -> np.ndarray[Any, np.dtype[np.bool_]]:
    """Which of the (global) user indices ``users`` have training history in ``data``."""
    from services.trainer.models.base import users_with_train_data

    out: np.ndarray[Any, np.dtype[np.bool_]] = users_with_train_data(data)[users.astype(np.int64)]
    return out
