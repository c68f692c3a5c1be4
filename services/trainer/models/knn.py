"""Item-based k-nearest neighbours with bounded memory: a sparse top-k similarity graph.

Similarities are shrunk Pearson correlations of baseline residuals (Surprise's
``pearson_baseline``) or shrunk cosines of co-watching (``cosine``: watches are far denser
than ratings), computed a block of items at a time so memory stays at
``block × items`` floats instead of a dense items × items matrix; each item keeps only its
``k`` most similar positive neighbours.  The artifact stores that graph as CSR (scoring.py).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from services.trainer.data import Prepared
from services.trainer.models.base import (
    Arrays,
    ModelFamily,
    item_popularity,
    seen_arrays,
    users_with_train_data,
)
from services.trainer.util import progress

F64 = npt.NDArray[np.float64]


def baselines(
    users: npt.NDArray[np.int32],
    items: npt.NDArray[np.int32],
    ratings: npt.NDArray[np.float32],
    n_users: int,
    n_items: int,
    reg_u: float = 15.0,
    reg_i: float = 10.0,
    epochs: int = 10,
) -> tuple[float, F64, F64]:
    """Global mean and regularized user/item biases by alternating least squares (as Surprise)."""
    bu = np.zeros(n_users)
    bi = np.zeros(n_items)
    if len(ratings) == 0:
        return 0.0, bu, bi
    r = ratings.astype(np.float64)
    mu = float(r.mean())
    cu = np.bincount(users, minlength=n_users)
    ci = np.bincount(items, minlength=n_items)
    for _ in range(epochs):
        bu = np.bincount(users, r - mu - bi[items], minlength=n_users) / (reg_u + cu)
        bi = np.bincount(items, r - mu - bu[users], minlength=n_items) / (reg_i + ci)
    return mu, bu, bi


def topk_similarities(
    users: npt.NDArray[np.int32],
    items: npt.NDArray[np.int32],
    residuals: npt.NDArray[np.float64],
    n_users: int,
    n_items: int,
    k: int,
    shrinkage: float = 100.0,
    min_support: int = 1,
    block: int = 512,
    kind: str = "pearson_baseline",
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int32], npt.NDArray[np.float32]]:
    """CSR (indptr, indices, sims) of each item's k most similar items (positive sims only).

    ``pearson_baseline``: shrunk correlation of the residuals over common raters (Surprise's);
    ``cosine``: shrunk cosine of who watched what (residuals ignored; each pair counts once).
    """
    if kind not in ("pearson_baseline", "cosine"):
        raise ValueError(f"unknown similarity {kind!r}")
    indptr = np.zeros(n_items + 1, np.int64)
    if len(users) == 0 or k <= 0:
        return indptr, np.zeros(0, np.int32), np.zeros(0, np.float32)
    # only items in the input can have neighbours: work in their compact index space
    rated_items, local = np.unique(items, return_inverse=True)
    m = len(rated_items)
    k = min(k, m - 1)
    if k <= 0:
        return indptr, np.zeros(0, np.int32), np.zeros(0, np.float32)
    shape = (n_users, m)
    ones = sp.csr_matrix((np.ones(len(users), np.float32), (users, local)), shape=shape)
    ones.data[:] = 1.0  # duplicates were summed: a pair counts once
    ones_t = ones.T.tocsr()
    if kind == "pearson_baseline":
        res = sp.csr_matrix((residuals.astype(np.float32), (users, local)), shape=shape)
        sq = res.multiply(res).tocsr()
        res_t, sq_t = res.T.tocsr(), sq.T.tocsr()
    else:
        norms = np.sqrt(np.asarray(ones.sum(axis=0)).reshape(-1)).astype(np.float32)
    # rows per block so that one dense block stays near 16M floats (64 MB) whatever the catalog
    block = max(16, min(block, (1 << 24) // max(m, 1)))
    all_idx: list[npt.NDArray[np.int32]] = []
    all_sim: list[npt.NDArray[np.float32]] = []
    counts = np.zeros(n_items, np.int64)
    starts = range(0, m, block)
    for lo in progress(starts, "knn similarities", total=len(starts)):
        hi = min(lo + block, m)
        support = (ones_t[lo:hi] @ ones).toarray()
        if kind == "pearson_baseline":
            sim = (res_t[lo:hi] @ res).toarray()
            denom = (sq_t[lo:hi] @ ones).toarray()  # Σ over common users of the row item's res²
            denom *= (ones_t[lo:hi] @ sq).toarray()  # … times that of the column item's
            np.sqrt(denom, out=denom)
            shrunk = np.maximum(support - 1, 0)
        else:
            sim = support.copy()
            denom = np.outer(norms[lo:hi], norms)
            shrunk = support
        np.divide(sim, denom, out=sim, where=denom > 0)
        sim[denom <= 0] = 0.0
        sim *= shrunk / (shrunk + shrinkage)
        sim[support < max(min_support, 1)] = 0.0
        sim[np.arange(hi - lo), np.arange(lo, hi)] = 0.0  # an item is not its own neighbour
        top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        vals = np.take_along_axis(sim, top, axis=1)
        keep = vals > 0
        top = np.where(keep, top, m)  # sorts dropped entries to the end of each row
        order = np.argsort(top, axis=1, kind="stable")
        top = np.take_along_axis(top, order, axis=1)
        vals = np.take_along_axis(vals, order, axis=1)
        n_keep = keep.sum(axis=1)
        mask = np.arange(top.shape[1])[None, :] < n_keep[:, None]
        all_idx.append(rated_items[top[mask]].astype(np.int32))
        all_sim.append(vals[mask].astype(np.float32))
        counts[rated_items[lo:hi]] = n_keep
    indptr[1:] = np.cumsum(counts)
    return indptr, np.concatenate(all_idx), np.concatenate(all_sim)


class KNNModel(ModelFamily):
    """Item-based KNN with baselines (Surprise's KNNBaseline, item-based, static top-k)."""

    family: ClassVar[str] = "knn"
    defaults: ClassVar[dict[str, Any]] = {
        "k": 40,
        "shrinkage": 100.0,
        "min_support": 1,
        "reg_u": 15.0,
        "reg_i": 10.0,
        "baseline_epochs": 10,
        "implicit_weight": 0.5,
        "block": 512,
        "similarity": "pearson_baseline",
    }

    def known_users(self, data: Prepared) -> npt.NDArray[np.bool_]:
        """Everyone with training data: the seen items alone drive the scores."""
        return users_with_train_data(data)

    def family_arrays(self, data: Prepared, known: npt.NDArray[np.bool_]) -> Arrays:
        """The top-k graph; seen items' weights (residual, or a constant for unrated watches)."""
        p = self.params
        tr = data.train
        mu, bu, bi = baselines(
            tr.rate_user,
            tr.rate_item,
            tr.rate_value,
            data.n_users,
            data.n_items,
            float(p["reg_u"]),
            float(p["reg_i"]),
            int(p["baseline_epochs"]),
        )
        residuals = tr.rate_value - (mu + bu[tr.rate_user] + bi[tr.rate_item])
        if p["similarity"] == "cosine":
            # who watched (or rated) what: far denser than ratings in a streaming service
            keys = tr.pairs(data.n_items)
            sim_users, sim_items = (x.astype(np.int32) for x in np.divmod(keys, data.n_items))
            sim_values = np.ones(len(keys))
        else:
            sim_users, sim_items, sim_values = tr.rate_user, tr.rate_item, residuals
        knn_indptr, knn_indices, knn_sims = topk_similarities(
            sim_users,
            sim_items,
            sim_values,
            data.n_users,
            data.n_items,
            int(p["k"]),
            float(p["shrinkage"]),
            int(p["min_support"]),
            int(p["block"]),
            str(p["similarity"]),
        )
        seen = seen_arrays(data, known)
        rows = np.flatnonzero(known)
        lengths = np.diff(seen["seen_indptr"])
        seen_keys = np.repeat(rows.astype(np.int64), lengths) * data.n_items + seen["seen_indices"]
        rated_keys = tr.rate_user.astype(np.int64) * data.n_items + tr.rate_item
        order = np.argsort(rated_keys, kind="stable")
        rated_keys, rated_res = rated_keys[order], residuals[order]
        pos = np.minimum(np.searchsorted(rated_keys, seen_keys), max(len(rated_keys) - 1, 0))
        rated = (
            (rated_keys[pos] == seen_keys) if len(rated_keys) else np.zeros(len(seen_keys), bool)
        )
        weights = np.where(
            rated, rated_res[pos] if len(rated_keys) else 0.0, float(p["implicit_weight"])
        )
        served_bias = bi
        if p["similarity"] == "cosine":
            # co-watch sims are small next to rating biases: serve the neighbourhood sum, with a
            # tiny popularity prior only to order items it cannot tell apart
            pop = np.log1p(item_popularity(data))
            served_bias = 1e-3 * pop / max(float(pop.max()), 1.0)
        return {
            "knn_indptr": knn_indptr,
            "knn_indices": knn_indices,
            "knn_sims": knn_sims,
            "seen_weights": weights.astype(np.float32),
            "seen_rated": rated,
            "item_bias": served_bias.astype(np.float32),
            # the rating baseline, for rating predictions (evaluate.predict_ratings)
            "rating_item_bias": bi.astype(np.float32),
            "user_bias": bu[known].astype(np.float32),
            "global_bias": np.array([mu], np.float32),
        }
