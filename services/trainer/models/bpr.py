"""Bayesian personalized ranking (``implicit``, CPU) on who watched or rated what."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from services.trainer.data import Prepared
from services.trainer.models.base import (
    PRIOR_DEFAULTS,
    Arrays,
    ModelFamily,
    users_with_train_data,
)
from services.trainer.util import interactive, limit_blas_threads


class BPRModel(ModelFamily):
    """BPR-MF via ``implicit``; its item bias rides in the factors, so the biases are zero."""

    family: ClassVar[str] = "bpr"
    defaults: ClassVar[dict[str, Any]] = {
        "factors": 64,
        "learning_rate": 0.05,
        "regularization": 0.01,
        "iterations": 100,
        # one thread: implicit's BPR is lock-free parallel SGD, so more threads are not
        # reproducible (the content-addressed version would change on every run)
        "threads": 1,
        **PRIOR_DEFAULTS,
    }

    def known_users(self, data: Prepared) -> npt.NDArray[np.bool_]:
        """Everyone who watched or rated something in training."""
        return users_with_train_data(data)

    def family_arrays(self, data: Prepared, known: npt.NDArray[np.bool_]) -> Arrays:
        """User and item factors (the item bias is a factor against a constant 1)."""
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        p = self.params
        n_users = int(known.sum())
        matrix = data.seen_matrix("train")[np.flatnonzero(known)].tocsr()
        matrix.sort_indices()
        factors = int(p["factors"])
        user_factors = np.zeros((n_users, factors + 1), np.float32)
        item_factors = np.zeros((data.n_items, factors + 1), np.float32)
        if matrix.nnz:
            with limit_blas_threads(1):
                model = BayesianPersonalizedRanking(
                    factors=factors,
                    learning_rate=float(p["learning_rate"]),
                    regularization=float(p["regularization"]),
                    iterations=int(p["iterations"]),
                    num_threads=int(p["threads"]),
                    random_state=self.seed,
                )
                model.fit(matrix, show_progress=interactive())
            user_factors = np.ascontiguousarray(model.user_factors, dtype=np.float32)
            item_factors = np.ascontiguousarray(model.item_factors, dtype=np.float32)
        return {
            "user_factors": user_factors,
            "item_factors": item_factors,
            "user_bias": np.zeros(n_users, np.float32),
            "item_bias": np.zeros(data.n_items, np.float32),
            "global_bias": np.zeros(1, np.float32),
        }
