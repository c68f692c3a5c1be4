"""The recommendation core: pick the list, never answer empty. No HTTP here.

User ids are parsed once for every service by ``services.common.service.parse_user_id``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from services.recommender.demographics import UserDemographics
from services.recommender.metrics import RecommenderMetrics
from services.recommender.model import Kind, LoadedModel, ModelHolder

log = logging.getLogger("marquee.recommender.service")

__all__ = ["Kind", "Recommendation", "RecommendationService"]


@dataclass(frozen=True, slots=True)
class Recommendation:
    """One answer: distinct movie ids best first, the model that made it, and how."""

    items: list[str]
    model: LoadedModel
    kind: Kind
    segment: str | None = None
    line: str | None = None
    """The answer's line when already joined (a cached answer), else None."""

    def body(self) -> str:
        """The contract's one line: ids joined by commas, no spaces, no newline."""
        return self.line if self.line is not None else ",".join(self.items)


class RecommendationService:
    """Answers ``recommend(user_id)`` from whichever model the holder serves right now."""

    def __init__(
        self,
        holder: ModelHolder,
        metrics: RecommenderMetrics,
        *,
        demographics: UserDemographics | None = None,
        k: int = 20,
    ) -> None:
        self.holder = holder
        self.metrics = metrics
        self.demographics = demographics
        self.k = k
        self._hit = metrics.list_cache.labels("hit")  # bound once: no label lookup per request
        self._miss = metrics.list_cache.labels("miss")

    def cached(self, user_id: int) -> Recommendation | None:
        """The answer for ``user_id`` when the serving model already made it, else None."""
        model = self.holder.current
        return self._cached(model, user_id) if model is not None else None

    def _cached(self, model: LoadedModel, user_id: int) -> Recommendation | None:
        hit = model.lists.get(user_id)
        if hit is None:
            return None
        self._hit.inc()  # a known user asked before under this model: no scoring
        return Recommendation(hit[0], model, hit[1], None, hit[2])

    def recommend(self, user_id: int) -> Recommendation | None:
        """The top-k list for ``user_id``; None only while no model has been loaded."""
        model = self.holder.current  # read once: a concurrent swap cannot change it under us
        if model is None:
            return None
        cached = self._cached(model, user_id)
        if cached is not None:
            return cached
        scorer = model.scorer
        segment: str | None = None
        try:
            if scorer.user_index(user_id) is not None:
                items, personalized = scorer.recommend(user_id, self.k)
                kind: Kind = "personalized" if personalized else "popularity"
                # A known user's list changes only with the model (scores and excluded
                # history both come from it): distinct and capped once, then remembered.
                items = list(dict.fromkeys(items))[: self.k]
                line = ",".join(items)
                model.lists.put(user_id, (items, kind, line))
                self._miss.inc()
                return Recommendation(items, model, kind, None, line)
            else:
                segment = self._segment(user_id, model)
                items, _ = scorer.recommend(user_id, self.k, segment=segment)
                kind = "cold_start"
                source = "segment" if segment in scorer.segments else "overall"
                self.metrics.cold_starts.labels(model.version, source).inc()
        except Exception:  # a scoring bug must cost quality, never the answer
            log.exception("scoring failed; serving overall popularity", extra=model.log_fields)
            self.metrics.fallbacks.labels("scoring_error").inc()
            items = scorer.ids(scorer.popular[: self.k])
            kind, segment = "fallback", None
        # Distinct and capped whatever the artifact holds: the contract is checked here, once.
        items = list(dict.fromkeys(items))[: self.k]
        return Recommendation(items=items, model=model, kind=kind, segment=segment)

    def _segment(self, user_id: int, model: LoadedModel) -> str | None:
        if self.demographics is None or not model.scorer.segments:
            return None
        try:
            seg = self.demographics.segment(user_id)
        except Exception:  # the look-up is an optional nicety
            log.exception("demographics look-up failed")
            seg = None
        if seg is None:
            self.metrics.fallbacks.labels("no_segment").inc()
        return seg
