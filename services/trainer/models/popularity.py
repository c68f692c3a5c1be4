"""Popularity: the same list for everyone (minus what they saw) — the baseline and cold start."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from services.trainer.data import Prepared
from services.trainer.models.base import Arrays, ModelFamily, users_with_train_data

NS_PER_DAY = 86_400 * 1_000_000_000


class PopularityModel(ModelFamily):
    """Distinct training viewers per movie, optionally decayed with a half-life."""

    family: ClassVar[str] = "popularity"
    defaults: ClassVar[dict[str, Any]] = {"half_life_days": 0.0}

    def known_users(self, data: Prepared) -> npt.NDArray[np.bool_]:
        """Everyone with training data (so their seen movies are excluded)."""
        return users_with_train_data(data)

    def family_arrays(self, data: Prepared, known: npt.NDArray[np.bool_]) -> Arrays:
        """``item_scores``: (decayed) distinct-viewer counts."""
        tr = data.train
        keys = np.concatenate(
            [
                tr.inter_user.astype(np.int64) * data.n_items + tr.inter_item,
                tr.rate_user.astype(np.int64) * data.n_items + tr.rate_item,
            ]
        )
        times = np.concatenate([tr.inter_time, tr.rate_time])
        half_life = float(self.params["half_life_days"])
        if len(keys) == 0:
            return {"item_scores": np.zeros(data.n_items, np.float32)}
        # one vote per (user, movie): its latest event
        order = np.lexsort((times, keys))
        last = np.r_[keys[order][1:] != keys[order][:-1], True]
        keys, times = keys[order][last], times[order][last]
        weights = np.ones(len(keys))
        if half_life > 0:
            age_days = (times.max() - times) / NS_PER_DAY
            weights = np.exp2(-age_days / half_life)
        scores = np.bincount(keys % data.n_items, weights=weights, minlength=data.n_items)
        return {"item_scores": scores.astype(np.float32)}
