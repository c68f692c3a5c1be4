"""Surprise's own benchmark protocol on MovieLens 100K, and a small tuning search beside it.

Surprise publishes RMSE 0.934 / MAE 0.737 for default SVD under 5-fold cross-validation on
ML-100K.  ``cross_validate_svd`` repeats that protocol (reading ``u.data`` in place), so our
numbers can be set beside that table; ``tune`` picks SVD hyper-parameters on *other* folds
(3-fold, a different shuffle) and then reports the winner under the same 5-fold protocol.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from services.trainer.util import progress

log = logging.getLogger("marquee.trainer")
PUBLISHED = {"SVD": {"rmse": 0.934, "mae": 0.737}, "KNNBaseline": {"rmse": 0.931, "mae": 0.733}}
GRID: list[dict[str, Any]] = [
    {"n_factors": 100, "n_epochs": 20, "lr_all": 0.005, "reg_all": 0.02},  # the default
    {"n_factors": 50, "n_epochs": 30, "lr_all": 0.007, "reg_all": 0.05},
    {"n_factors": 100, "n_epochs": 40, "lr_all": 0.005, "reg_all": 0.08},
    {"n_factors": 150, "n_epochs": 50, "lr_all": 0.005, "reg_all": 0.1},
    {"n_factors": 200, "n_epochs": 60, "lr_all": 0.005, "reg_all": 0.12},
    {"n_factors": 50, "n_epochs": 60, "lr_all": 0.003, "reg_all": 0.1},
    {"n_factors": 200, "n_epochs": 80, "lr_all": 0.005, "reg_all": 0.15},
    {"n_factors": 300, "n_epochs": 60, "lr_all": 0.007, "reg_all": 0.15},
]


def _dataset(ml_dir: Path | str) -> Any:
    """ML-100K's u.data as a Surprise dataset, read in place."""
    from surprise import Dataset, Reader

    return Dataset.load_from_file(str(Path(ml_dir) / "u.data"), reader=Reader("ml-100k"))


def cross_validate_svd(
    ml_dir: Path | str, params: dict[str, Any] | None = None, folds: int = 5, seed: int = 0
) -> dict[str, Any]:
    """k-fold CV of SVD (default parameters unless given): mean/std RMSE and MAE, fit time."""
    from surprise import SVD, accuracy
    from surprise.model_selection import KFold

    data = _dataset(ml_dir)
    rmse, mae, fit_s = [], [], []
    splits = list(KFold(n_splits=folds, random_state=seed, shuffle=True).split(data))
    for trainset, testset in progress(splits, f"{folds}-fold SVD", total=folds):
        algo = SVD(random_state=seed, **(params or {}))
        started = time.perf_counter()
        algo.fit(trainset)
        fit_s.append(time.perf_counter() - started)
        preds = algo.test(testset)
        rmse.append(accuracy.rmse(preds, verbose=False))
        mae.append(accuracy.mae(preds, verbose=False))
    return {
        "params": params or "default",
        "folds": folds,
        "seed": seed,
        "rmse": round(float(np.mean(rmse)), 4),
        "rmse_std": round(float(np.std(rmse)), 4),
        "mae": round(float(np.mean(mae)), 4),
        "mae_std": round(float(np.std(mae)), 4),
        "fit_seconds": round(float(np.mean(fit_s)), 2),
    }


def surprise_protocol(ml_dir: Path | str, seed: int = 0) -> dict[str, Any]:
    """Default SVD under Surprise's 5-fold protocol, beside the published numbers."""
    res = cross_validate_svd(ml_dir, None, 5, seed)
    res["published"] = PUBLISHED["SVD"]
    res["delta_rmse"] = round(res["rmse"] - PUBLISHED["SVD"]["rmse"], 4)
    log.info("surprise protocol", extra={"rmse": res["rmse"], "mae": res["mae"]})
    return res


def tune(
    ml_dir: Path | str, seed: int = 0, grid: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """Pick SVD parameters by 3-fold CV on a different shuffle, then score them by 5-fold CV."""
    trials = []
    for params in grid or GRID:
        res = cross_validate_svd(ml_dir, params, folds=3, seed=seed + 1)
        trials.append({"params": params, "rmse": res["rmse"], "mae": res["mae"]})
        log.info("tuning trial", extra={"trial": params, "rmse": res["rmse"]})
    best = min(trials, key=lambda t: t["rmse"])
    final = cross_validate_svd(ml_dir, best["params"], folds=5, seed=seed)
    return {
        "selection": "3-fold CV (shuffle seed+1); reported: the 5-fold protocol (shuffle seed)",
        "trials": trials,
        "best": best["params"],
        "rmse": final["rmse"],
        "mae": final["mae"],
        "rmse_std": final["rmse_std"],
        "below_published_rmse": round(PUBLISHED["SVD"]["rmse"] - final["rmse"], 4),
    }
