"""The honest temporal protocol: tune on validation, refit on train + validation, test once.

For each family a small seeded grid (``GRIDS``) is fitted on the training period and scored on
the validation period only; the winner's parameters are refitted on train + validation and the
test period is scored once, per user, so every comparison is paired over the same users with a
bootstrap interval.  The strongest non-personalized lists (recency-weighted popularity with a
tuned half-life, demographic-segment popularity) are baselines beside all-time popularity, and
warm users (with training history) are reported apart from cold ones, who get a segment list
from every model.
"""

from __future__ import annotations

import itertools
import logging
import time
from typing import Any

import numpy as np

from services.common.scoring import NON_PERSONAL
from services.trainer.data import Prepared
from services.trainer.evaluate import F64, paired_ratio_ci, ranking_metrics

log = logging.getLogger("marquee.trainer")

COLD = {"cold_half_life_days": [0.0, 30.0], "cold_shrinkage": [0.0, 50.0]}
PRIOR = {"prior_weight": [0.0, 0.2, 0.5, 1.0, 2.0, 4.0], "prior_half_life_days": [3.0, 14.0, 60.0]}
"""The recency prior, searched for the winner of a family with one (``base.PRIOR_DEFAULTS``)."""
"""The cold-start list parameters every family's grid crosses (cheap: no refit of the model)."""
GRIDS: dict[str, dict[str, list[Any]]] = {
    "popularity": {"half_life_days": [0.0, 3.0, 7.0, 14.0, 30.0, 60.0, 120.0]},
    "segment": {"half_life_days": [0.0, 7.0, 30.0, 120.0], "shrinkage": [5.0, 20.0, 100.0]},
    "ease": {"l2": [50.0, 150.0, 400.0, 1000.0], "neighbours": [300]},
    "als": {
        "weighting": ["log", "bm25"],
        "factors": [32, 64],
        "regularization": [0.1, 5.0],
        "alpha": [2.0, 10.0],
        "iterations": [15],
        "threads": [2],
    },
    "bpr": {
        "factors": [32, 64],
        "learning_rate": [0.01, 0.05],
        "regularization": [0.001, 0.01],
        "iterations": [100],
        "threads": [1],  # parallel SGD is not reproducible
    },
}


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
    return metrics, per_user


def _val(metrics: dict[str, Any], key: str) -> dict[str, Any]:
    """The validation numbers a trial keeps: overall, warm and cold users."""
    return {m: metrics[m] for m in (key, f"{key}_with_history", f"{key}_cold")}


def tune(family: str, data: Prepared, k: int = 20, seed: int = 0) -> dict[str, Any]:
    """Grid search on the validation period: every trial's score and the best parameters.

    The family's own parameters are searched first (no recency prior, all-time cold-start
    lists); then the recency prior for the winner, then the cold lists' parameters (which never
    change a warm user's list): a staged search, seeded and deterministic.
    """
    key = f"ndcg@{k}"
    trials: list[dict[str, Any]] = []
    for params in grid(GRIDS[family]):
        started = time.perf_counter()
        metrics, _ = _score(family, params, data, "val", k, seed)
        trials.append(
            {
                "params": params,
                "val": _val(metrics, key),
                "seconds": round(time.perf_counter() - started, 2),
            }
        )
    best = max(trials, key=lambda t: (t["val"][key] or 0.0))["params"]
    from services.trainer.models import FAMILIES

    if "prior_weight" in FAMILIES[family].defaults:
        for prior in grid(PRIOR):
            params = {**best, **prior}
            metrics, _ = _score(family, params, data, "val", k, seed)
            trials.append({"params": params, "val": _val(metrics, key)})
        best = max(trials, key=lambda t: (t["val"][key] or 0.0))["params"]
    for cold in grid(COLD):
        params = {**best, **cold}
        metrics, _ = _score(family, params, data, "val", k, seed)
        trials.append({"params": params, "val": _val(metrics, key)})
    chosen = max(trials, key=lambda t: (t["val"][key] or 0.0))
    log.info("tuned", extra={"family": family, "params": chosen["params"]})
    return {"family": family, "best": chosen["params"], "val": chosen["val"], "trials": trials}


def temporal_study(
    data: Prepared,
    families: list[str],
    k: int = 20,
    seed: int = 0,
    fixed: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Tune each family on validation, refit on train + validation, score the test once.

    ``fixed`` gives parameters for families without a grid (e.g. from ``params.yaml``).
    Also scores all-time popularity (the usual baseline) and reports, paired over the test
    users: the best model (chosen on validation) against all-time popularity, and on warm users
    the best personalized model against the best non-personalized list.
    """
    key = f"ndcg@{k}"
    tuning: dict[str, dict[str, Any]] = {}
    for f in families:
        if f in GRIDS:
            tuning[f] = tune(f, data, k, seed)
        else:
            params = (fixed or {}).get(f, {})
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
        "tuning": tuning,
        "test": test,
        "summary": summary,
    }


def history_mask(data: Prepared, users: F64) -> np.ndarray[Any, np.dtype[np.bool_]]:
    """Which of the (global) user indices ``users`` have training history in ``data``."""
    from services.trainer.models.base import users_with_train_data

    out: np.ndarray[Any, np.dtype[np.bool_]] = users_with_train_data(data)[users.astype(np.int64)]
    return out
