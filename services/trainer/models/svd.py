"""Biased matrix factorization with scikit-surprise's SVD (the original team's model).

Surprise's model object is never stored: its factors and biases are copied out as float32
arrays in the index space every artifact shares.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
from surprise import SVD, Trainset

from services.trainer.data import Prepared
from services.trainer.models.base import Arrays, ModelFamily


def surprise_trainset(
    users: npt.NDArray[np.int32], items: npt.NDArray[np.int32], values: npt.NDArray[np.float32]
) -> tuple[Trainset, npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """A surprise Trainset whose inner ids are ranks of our indices; also those indices."""
    uniq_u, inner_u = np.unique(users, return_inverse=True)
    uniq_i, inner_i = np.unique(items, return_inverse=True)
    order = np.lexsort((inner_i, inner_u))  # a fixed order → a fixed SGD sequence
    ur: defaultdict[int, list[tuple[int, float]]] = defaultdict(list)
    ir: defaultdict[int, list[tuple[int, float]]] = defaultdict(list)
    for u, i, r in zip(
        inner_u[order].tolist(), inner_i[order].tolist(), values[order].tolist(), strict=True
    ):
        ur[u].append((i, r))
        ir[i].append((u, r))
    trainset = Trainset(
        ur,
        ir,
        len(uniq_u),
        len(uniq_i),
        len(values),
        (1, 5),
        {int(x): n for n, x in enumerate(uniq_u)},
        {int(x): n for n, x in enumerate(uniq_i)},
    )
    return trainset, uniq_u.astype(np.int64), uniq_i.astype(np.int64)


class SVDModel(ModelFamily):
    """Funk-style SVD with biases, trained by SGD on explicit ratings."""

    family: ClassVar[str] = "svd"
    defaults: ClassVar[dict[str, Any]] = {
        "n_factors": 100,
        "n_epochs": 20,
        "lr_all": 0.005,
        "reg_all": 0.02,
        "init_std_dev": 0.1,
    }

    def known_users(self, data: Prepared) -> npt.NDArray[np.bool_]:
        """Users with at least one training rating (others have no factors)."""
        known = np.zeros(data.n_users, bool)
        known[data.train.rate_user] = True
        return known

    def family_arrays(self, data: Prepared, known: npt.NDArray[np.bool_]) -> Arrays:
        """Factors and biases, zero for movies nobody rated."""
        tr = data.train
        p = self.params
        n_factors = int(p["n_factors"])
        user_factors = np.zeros((int(known.sum()), n_factors), np.float32)
        user_bias = np.zeros(int(known.sum()), np.float32)
        item_factors = np.zeros((data.n_items, n_factors), np.float32)
        item_bias = np.zeros(data.n_items, np.float32)
        global_bias = np.zeros(1, np.float32)
        if len(tr.rate_value):
            trainset, uidx, iidx = surprise_trainset(tr.rate_user, tr.rate_item, tr.rate_value)
            algo = SVD(
                n_factors=n_factors,
                n_epochs=int(p["n_epochs"]),
                lr_all=float(p["lr_all"]),
                reg_all=float(p["reg_all"]),
                init_std_dev=float(p["init_std_dev"]),
                random_state=self.seed,
            )
            algo.fit(trainset)
            rows = np.cumsum(known) - 1  # global user index → row among known users
            user_factors[rows[uidx]] = algo.pu
            user_bias[rows[uidx]] = algo.bu
            item_factors[iidx] = algo.qi
            item_bias[iidx] = algo.bi
            global_bias[0] = trainset.global_mean
        return {
            "user_factors": user_factors,
            "item_factors": item_factors,
            "user_bias": user_bias,
            "item_bias": item_bias,
            "global_bias": global_bias,
        }
