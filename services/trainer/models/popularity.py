"""Popularity: the same list for everyone (minus what they saw) — the baseline and cold start."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from services.trainer.data import Prepared
from services.trainer.models.base import (
    Arrays,
    ModelFamily,
    recency_votes,
    users_with_train_data,
)


class PopularityModel(ModelFamily):
    """Distinct training viewers per movie, optionally decayed with a half-life."""

    family: ClassVar[str] = "popularity"
    defaults: ClassVar[dict[str, Any]] = {"half_life_days": 0.0}

    def known_users(self, data: Prepared) -> npt.NDArray[np.bool_]:
        """Everyone with training data (so their seen movies are excluded)."""
        return users_with_train_data(data)

    def family_arrays(self, data: Prepared, known: npt.NDArray[np.bool_]) -> Arrays:
        """``item_scores``: (decayed) distinct-viewer counts."""
        _, items, weights = recency_votes(data, float(self.params["half_life_days"]))
        scores = np.bincount(items, weights=weights, minlength=data.n_items)
        return {"item_scores": scores.astype(np.float32)}
