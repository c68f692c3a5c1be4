"""The plain core: the never-empty, never-failing answer (ids: tests/common/test_service.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.common.artifacts import Manifest, Registry, write_artifact
from services.recommender.metrics import RecommenderMetrics
from services.recommender.model import ModelHolder
from services.recommender.service import RecommendationService
from services.recommender.synthetic import synthetic_arrays
from tests.recommender.conftest import SIZES


def make_service(root: Path) -> tuple[RecommendationService, RecommenderMetrics]:
    """A service on the stable ``synthetic`` model of ``root``."""
    metrics = RecommenderMetrics()
    holder = ModelHolder(Registry(root), "synthetic", "stable", metrics)
    holder.refresh()
    return RecommendationService(holder, metrics), metrics


def test_no_model_means_none(tmp_path: Path) -> None:
    service, _ = make_service(tmp_path)
    assert service.recommend(1) is None


def test_scoring_error_falls_back_to_popularity(
    registry_root: Path, svd_v1: Manifest, monkeypatch: pytest.MonkeyPatch
) -> None:
    service, metrics = make_service(registry_root)
    scorer = service.holder.current.scorer  # type: ignore[union-attr]

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("simulated scoring bug")

    monkeypatch.setattr(scorer, "recommend", boom)
    rec = service.recommend(3)
    assert rec is not None and rec.kind == "fallback"
    assert rec.items == scorer.ids(scorer.popular[:20])
    assert (
        metrics.registry.get_sample_value(
            "marquee_recommender_fallbacks_total", {"reason": "scoring_error"}
        )
        == 1
    )


def test_answer_is_distinct_even_if_the_artifact_repeats_ids(registry_root: Path) -> None:
    arrays = synthetic_arrays("svd", seed=3, **SIZES)
    arrays["popular"] = arrays["popular"][[0, 0, 1, 1, 2, 2, *range(3, 40)]]
    staging = registry_root.parent / "stage"
    write_artifact(staging, name="synthetic", family="svd", arrays=arrays, params={}, snapshot={})
    Registry(registry_root).register(staging, channel="stable")
    service, _ = make_service(registry_root)
    rec = service.recommend(10**9)
    assert rec is not None
    assert len(rec.items) == len(set(rec.items)) == 20
