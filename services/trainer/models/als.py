"""Implicit-feedback ALS (``implicit``, CPU) on watch minutes: the ranking challenger."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from services.trainer.data import Prepared
from services.trainer.models.base import (
    PRIOR_DEFAULTS,
    Arrays,
    ModelFamily,
    users_with_train_data,
)
from services.trainer.util import interactive, limit_blas_threads


def confidence_matrix(data: Prepared, known: npt.NDArray[np.bool_]) -> sp.csr_matrix:
    """known users × items: log1p(minutes watched), 1 for a rating without a watch record."""
    tr = data.train
    rows = np.cumsum(known) - 1
    shape = (int(known.sum()), data.n_items)
    watched = sp.csr_matrix(
        (np.log1p(np.maximum(tr.inter_minutes, 1.0)), (rows[tr.inter_user], tr.inter_item)),
        shape=shape,
    )
    rated = sp.csr_matrix(
        (np.ones(len(tr.rate_user), np.float32), (rows[tr.rate_user], tr.rate_item)), shape=shape
    )
    out = watched.maximum(rated).astype(np.float32).tocsr()
    out.sort_indices()
    return out


def bm25(matrix: sp.csr_matrix, k1: float, b: float) -> sp.csr_matrix:
    """BM25 confidence of users × items: saturates repeats, discounts heavy users' items.

    Each item is a "document" of its viewers: a viewer who watched many movies says less about
    any one of them (idf over users), and a very popular movie's votes are length-normalized.
    """
    coo = matrix.T.tocoo()  # items × users
    n_items = float(coo.shape[0])
    idf = np.log(n_items) - np.log1p(np.bincount(coo.col, minlength=coo.shape[1]))
    lengths = np.asarray(coo.sum(axis=1)).reshape(-1)
    norm = (1.0 - b) + b * lengths / max(float(lengths.mean()), 1e-12)
    data = coo.data * (k1 + 1.0) / (k1 * norm[coo.row] + coo.data) * idf[coo.col]
    out = sp.csr_matrix((data.astype(np.float32), (coo.col, coo.row)), shape=matrix.shape)
    out.sort_indices()
    return out


class ALSModel(ModelFamily):
    """Hu–Koren–Volinsky ALS via ``implicit``; scores are dot products (zero biases)."""

    family: ClassVar[str] = "als"
    defaults: ClassVar[dict[str, Any]] = {
        "factors": 32,
        "regularization": 5.0,
        "alpha": 10.0,
        "iterations": 15,
        "threads": 0,
        **PRIOR_DEFAULTS,
        # confidence: "log" = log(1 + minutes watched); "bm25" = BM25 of that (bm25_k1, bm25_b)
        "weighting": "log",
        "bm25_k1": 100.0,
        "bm25_b": 0.8,
    }

    def known_users(self, data: Prepared) -> npt.NDArray[np.bool_]:
        """Everyone who watched or rated something in training."""
        return users_with_train_data(data)

    def family_arrays(self, data: Prepared, known: npt.NDArray[np.bool_]) -> Arrays:
        """User and item factors from ALS; biases are zero so scoring.py's formula applies."""
        from implicit.cpu.als import AlternatingLeastSquares

        p = self.params
        n_users = int(known.sum())
        factors = int(p["factors"])
        user_factors = np.zeros((n_users, factors), np.float32)
        item_factors = np.zeros((data.n_items, factors), np.float32)
        matrix = confidence_matrix(data, known)
        if p["weighting"] == "bm25" and matrix.nnz:
            matrix = bm25(matrix, float(p["bm25_k1"]), float(p["bm25_b"]))
        elif p["weighting"] != "log":
            raise ValueError(f"als: weighting must be 'log' or 'bm25', not {p['weighting']!r}")
        if matrix.nnz:
            # BLAS threads on top of implicit's own threads only oversubscribe the cores
            with limit_blas_threads(1):
                model = AlternatingLeastSquares(
                    factors=factors,
                    regularization=float(p["regularization"]),
                    alpha=float(p["alpha"]),
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
