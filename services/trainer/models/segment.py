"""Demographic-segment popularity: the strongest list that needs no history, only age and gender.

Per segment (``scoring.segment_key``: gender × age group), the recency-weighted share of the
segment's users who watched each movie, shrunk toward the overall share with the weight of
``shrinkage`` pseudo-users, so a small segment falls back to overall popularity.  Its lists
also replace every family's cold-start ones in this artifact.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from services.trainer.data import Prepared
from services.trainer.models.base import (
    Arrays,
    ModelFamily,
    rank_items,
    recency_votes,
    users_with_train_data,
)


class SegmentModel(ModelFamily):
    """Segment × movie scores; a known user's seen movies are still excluded."""

    family: ClassVar[str] = "segment"
    defaults: ClassVar[dict[str, Any]] = {"half_life_days": 0.0, "shrinkage": 20.0}

    def known_users(self, data: Prepared) -> npt.NDArray[np.bool_]:
        """Everyone with training data (so their seen movies are excluded)."""
        return users_with_train_data(data)

    def family_arrays(self, data: Prepared, known: npt.NDArray[np.bool_]) -> Arrays:
        """``segment_scores``, ``user_segment`` and matching cold-start segment lists."""
        users, items, weights = recency_votes(data, float(self.params["half_life_days"]))
        names, seg = data.segment_index()
        seg = seg.reshape(-1).astype(np.int32)
        n_seg, n_items = len(names), data.n_items
        counts = np.bincount(
            seg[users].astype(np.int64) * n_items + items,
            weights=weights,
            minlength=n_seg * n_items,
        ).reshape(n_seg, n_items)
        active = np.bincount(seg[users_with_train_data(data)], minlength=n_seg).astype(np.float64)
        overall = counts.sum(axis=0) / max(float(active.sum()), 1.0)
        m = float(self.params["shrinkage"])
        scores = (counts + m * overall[None, :]) / (active[:, None] + m)
        k = min(int(self.params["popular_k"]), n_items)
        lists = np.stack([rank_items(scores[s], overall, k) for s in range(n_seg)])
        return {
            "segment_scores": scores.astype(np.float32),
            "user_segment": seg[known],
            "segment_keys": names.astype(str),
            "segment_popular": lists.reshape(n_seg, k).astype(np.int32),
        }
