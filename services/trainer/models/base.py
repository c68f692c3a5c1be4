"""The model interface and the arrays every artifact carries (see services.common.scoring).

A family only computes its own arrays; ``fit`` adds the shared ones (ids, seen items, cold-start
lists), and the fitted model recommends and scores through ``services.common.scoring.Scorer``,
so what is evaluated here is exactly what the recommender serves.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from services.common.artifacts import Artifact, Manifest
from services.common.scoring import Scorer
from services.trainer.data import Prepared
from services.trainer.util import extreme_per_key, unique_ints

Arrays = dict[str, npt.NDArray[Any]]
NS_PER_DAY = 86_400 * 1_000_000_000
COLD_DEFAULTS: dict[str, Any] = {
    "popular_k": 200,
    "cold_half_life_days": 0.0,
    "cold_shrinkage": 0.0,
}
"""Parameters every family takes: the cold-start lists' length, recency half-life, shrinkage."""
PRIOR_DEFAULTS: dict[str, Any] = {"prior_weight": 0.0, "prior_half_life_days": 14.0}
"""A recency-popularity prior added to ``item_bias`` (families whose defaults include these):
``prior_weight`` × (decayed distinct viewers / the top item's), so a personalized score also
knows what is being watched now."""


def recency_prior(data: Prepared, weight: float, half_life_days: float) -> npt.NDArray[np.float32]:
    """``weight`` × recency-weighted popularity scaled to [0, 1] (zeros when ``weight`` is 0)."""
    if weight == 0:
        return np.zeros(data.n_items, np.float32)
    _, items, weights = recency_votes(data, half_life_days)
    pop = np.bincount(items, weights=weights, minlength=data.n_items)
    return (weight * pop / max(float(pop.max(initial=0.0)), 1e-12)).astype(np.float32)


def recency_votes(
    data: Prepared, half_life_days: float
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """(user, item, weight) per training (user, movie) pair, weighted by its latest event.

    The weight halves every ``half_life_days`` before the end of training (1 for all when 0):
    relevance is "watched in the next weeks", which favours what is watched now.
    """
    tr = data.train
    keys = np.concatenate(
        [
            tr.inter_user.astype(np.int64) * data.n_items + tr.inter_item,
            tr.rate_user.astype(np.int64) * data.n_items + tr.rate_item,
        ]
    )
    times = np.concatenate([tr.inter_time, tr.rate_time])
    if len(keys) == 0:
        z = np.zeros(0, np.int64)
        return z, z, np.zeros(0)
    keys, times = extreme_per_key(keys, times, latest=True)  # one vote per pair: its latest
    weights = np.ones(len(keys))
    if half_life_days > 0:
        age_days = (times.max() - times) / NS_PER_DAY
        weights = np.exp2(-age_days / half_life_days)
    users, items = np.divmod(keys, data.n_items)
    return users, items, weights


def item_popularity(data: Prepared) -> npt.NDArray[np.float64]:
    """Distinct training users per item (watched or rated)."""
    keys = data.train.pairs(data.n_items)
    counts: npt.NDArray[np.float64] = np.bincount(
        keys % data.n_items, minlength=data.n_items
    ).astype(np.float64)
    return counts


def rank_items(
    primary: npt.NDArray[Any], secondary: npt.NDArray[Any], k: int
) -> npt.NDArray[np.int32]:
    """Indices of the k best items by ``primary`` then ``secondary`` (desc), then index (asc)."""
    order = np.lexsort((np.arange(len(primary)), -secondary, -primary))
    out: npt.NDArray[np.int32] = order[:k].astype(np.int32)
    return out


def cold_start_arrays(
    data: Prepared, popular_k: int, half_life_days: float = 0.0, shrinkage: float = 0.0
) -> Arrays:
    """``popular`` and ``segment_keys``/``segment_popular``: the answers for unknown users.

    Both count distinct training viewers, each vote decayed by ``half_life_days`` (0: all-time
    counts); a segment's share of viewers is shrunk toward the overall share with the weight of
    ``shrinkage`` pseudo-users (0: the segment's own counts, overall popularity on ties).
    """
    k = min(popular_k, data.n_items)
    users, items, weights = recency_votes(data, half_life_days)
    overall = np.bincount(items, weights=weights, minlength=data.n_items).astype(np.float64)
    popular = rank_items(overall, item_popularity(data), k)
    seg_names, seg_index = data.segment_index()
    present = unique_ints(seg_index[users]) if len(users) else np.zeros(0, np.int64)
    pos = np.full(len(seg_names), -1, np.int64)
    pos[present] = np.arange(len(present))
    counts = (
        np.bincount(
            pos[seg_index[users]] * data.n_items + items,
            weights=weights,
            minlength=len(present) * data.n_items,
        )
        .astype(np.float64)
        .reshape(len(present), data.n_items)
    )
    if shrinkage > 0 and len(present):
        distinct = unique_ints(users)
        active = np.bincount(pos[seg_index[distinct]], minlength=len(present))
        share = overall / max(float(len(distinct)), 1.0)
        counts = (counts + shrinkage * share[None, :]) / (active[:, None] + shrinkage)
    seg_popular = np.zeros((len(present), k), np.int32)
    for row in range(len(present)):
        # ties (and items the segment never watched) fall back to overall popularity
        seg_popular[row] = rank_items(counts[row], overall, k)
    return {
        "popular": popular,
        "segment_keys": seg_names[present].astype(str),
        "segment_popular": seg_popular,
    }


def seen_arrays(data: Prepared, known: npt.NDArray[np.bool_]) -> Arrays:
    """``user_ids`` and the CSR of training items of the users the model knows."""
    seen = data.seen_matrix("train")[np.flatnonzero(known)]
    seen.sort_indices()
    return {
        "user_ids": data.user_ids[known].astype(np.int64),
        "seen_indptr": seen.indptr.astype(np.int64),
        "seen_indices": seen.indices.astype(np.int32),
    }


def users_with_train_data(data: Prepared) -> npt.NDArray[np.bool_]:
    """Users who watched or rated anything in the training period."""
    known = np.zeros(data.n_users, bool)
    known[data.train.inter_user] = True
    known[data.train.rate_user] = True
    return known


@dataclass
class Fitted:
    """A trained model: its family, parameters and artifact arrays, servable in memory."""

    family: str
    params: dict[str, Any]
    arrays: Arrays
    train_seconds: float = 0.0
    texts: dict[str, str] = field(default_factory=dict)
    """Text files of the artifact (e.g. ``ranker.txt``), hashed like the arrays."""
    info: dict[str, Any] = field(default_factory=dict)
    """What fitting measured (not part of the artifact), e.g. the ranker's training set."""

    @cached_property
    def scorer(self) -> Scorer:
        """The serving code over these arrays (no file round trip needed)."""
        manifest = Manifest(
            name=self.family,
            family=self.family,
            version="in-memory",
            created="",
            git_sha="",
            snapshot={},
            params=self.params,
            metrics={},
            files={},
        )
        return Scorer(
            Artifact(manifest=manifest, arrays=self.arrays, path=Path(), texts=self.texts)
        )

    def recommend(self, user_id: int, k: int = 20, exclude_seen: bool = True) -> list[str]:
        """Top-k movie ids for a user (cold-start list for unknown users)."""
        return self.scorer.recommend(user_id, k, exclude_seen)[0]

    def score(self, user_id: int, movie_ids: Sequence[str]) -> npt.NDArray[np.float32]:
        """The model's scores of ``movie_ids`` for ``user_id`` (NaN where unknown)."""
        return self.scorer.score(user_id, movie_ids)


class ModelFamily(ABC):
    """A model family: hyper-parameters in, artifact arrays out."""

    family: ClassVar[str]
    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, params: Mapping[str, Any] | None = None, seed: int = 0) -> None:
        """Keep the family's defaults overridden by ``params``; reject unknown keys."""
        unknown = set(params or {}) - set(self.defaults) - set(COLD_DEFAULTS)
        if unknown:
            raise ValueError(f"{self.family}: unknown parameters {sorted(unknown)}")
        self.params: dict[str, Any] = {**self.defaults, **COLD_DEFAULTS, **dict(params or {})}
        self.seed = int(seed)
        self.texts: dict[str, str] = {}  # text files a family writes beside its arrays
        self.info: dict[str, Any] = {}

    @abstractmethod
    def known_users(self, data: Prepared) -> npt.NDArray[np.bool_]:
        """Which users get personalized scores (the rest are cold start)."""

    @abstractmethod
    def family_arrays(self, data: Prepared, known: npt.NDArray[np.bool_]) -> Arrays:
        """The family's own arrays (scoring.py conventions) for the ``known`` users."""

    def fit(self, data: Prepared) -> Fitted:
        """Train on ``data.train`` and return the complete artifact arrays."""
        import time

        started = time.perf_counter()
        known = self.known_users(data)
        arrays: Arrays = {"item_ids": data.item_ids.astype(str)}
        arrays.update(seen_arrays(data, known))
        arrays.update(
            cold_start_arrays(
                data,
                int(self.params["popular_k"]),
                float(self.params["cold_half_life_days"]),
                float(self.params["cold_shrinkage"]),
            )
        )
        arrays.update(self.family_arrays(data, known))
        if "prior_weight" in self.params:
            prior = recency_prior(
                data, float(self.params["prior_weight"]), float(self.params["prior_half_life_days"])
            )
            arrays["item_bias"] = (arrays["item_bias"] + prior).astype(np.float32)
        return Fitted(
            family=self.family,
            params={"seed": self.seed, **self.params},
            arrays=arrays,
            train_seconds=time.perf_counter() - started,
            texts=dict(self.texts),
            info=dict(self.info),
        )
