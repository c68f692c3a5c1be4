"""The per-model list cache: hits skip scoring, answers stay exact, swaps and bounds hold."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask.testing import FlaskClient

from services.common.artifacts import Manifest, Registry
from services.recommender.app import create_app, runtime_of
from services.recommender.cache import ListCache
from services.recommender.metrics import RecommenderMetrics
from services.recommender.model import ModelHolder
from services.recommender.service import RecommendationService
from services.recommender.synthetic import write_synthetic_model
from tests.recommender.conftest import SIZES, settings_for


def make_service(root: Path, size: int = 1_000) -> RecommendationService:
    """A service on the stable ``synthetic`` model of ``root`` with a list cache of ``size``."""
    metrics = RecommenderMetrics()
    holder = ModelHolder(Registry(root), "synthetic", "stable", metrics, list_cache_size=size)
    holder.refresh()
    return RecommendationService(holder, metrics)


class CountingScorer:
    """Counts calls of ``recommend`` on a real scorer (the cache must avoid them)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, service: RecommendationService) -> None:
        model = service.holder.current
        assert model is not None
        self.calls = 0
        real = model.scorer.recommend

        def counted(*args: object, **kwargs: object) -> tuple[list[str], bool]:
            self.calls += 1
            return real(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(model.scorer, "recommend", counted)


def test_direct_mapped_cache_hits_misses_and_evicts() -> None:
    cache: ListCache[str] = ListCache(4)
    assert cache.get(7) is None
    cache.put(7, "seven")
    assert cache.get(7) == "seven"
    assert cache.get(3) is None, "same slot, another user: a miss, not seven's list"
    cache.put(3, "three")  # 3 % 4 == 7 % 4: evicts 7
    assert cache.get(3) == "three" and cache.get(7) is None
    for u in range(100):
        cache.put(u, str(u))
    assert len(cache) == 4, "never more users than slots"
    off: ListCache[str] = ListCache(0)
    off.put(1, "x")
    assert off.get(1) is None and len(off) == 0


def test_a_known_users_repeat_request_costs_no_scoring_and_gets_the_same_list(
    registry_root: Path, svd_v1: Manifest, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = make_service(registry_root)
    counter = CountingScorer(monkeypatch, service)
    first = service.recommend(5)
    second = service.recommend(5)
    assert first is not None and second is not None
    assert counter.calls == 1
    assert second.items == first.items and second.kind == first.kind == "personalized"
    other = service.recommend(6)
    assert other is not None and counter.calls == 2 and other.items != first.items
    sample = service.metrics.registry.get_sample_value
    assert sample("marquee_recommender_list_cache_total", {"result": "hit"}) == 1
    assert sample("marquee_recommender_list_cache_total", {"result": "miss"}) == 2


def test_cached_lists_still_leave_out_what_the_user_watched(
    registry_root: Path, svd_v1: Manifest
) -> None:
    service = make_service(registry_root)
    model = service.holder.current
    assert model is not None
    scorer = model.scorer
    for user_id in scorer.user_ids[:50].tolist():
        seen = set(scorer.ids(scorer.seen(scorer.user_index(user_id))))  # type: ignore[arg-type]
        uncached, _ = scorer.recommend(user_id, 20)
        for _ in range(2):  # a miss, then a hit
            rec = service.recommend(user_id)
            assert rec is not None
            assert rec.items == uncached
            assert not seen & set(rec.items)


def test_cold_users_and_fallbacks_are_not_cached(
    registry_root: Path, svd_v1: Manifest, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = make_service(registry_root)
    model = service.holder.current
    assert model is not None
    cold = service.recommend(10**9)
    assert cold is not None and cold.kind == "cold_start"
    assert model.lists.get(10**9) is None, "a cold user's segment may be known next time"

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("simulated scoring bug")

    monkeypatch.setattr(model.scorer, "recommend", boom)
    assert service.recommend(8).kind == "fallback"  # type: ignore[union-attr]
    assert len(model.lists) == 0
    monkeypatch.undo()
    assert service.recommend(8).kind == "personalized"  # type: ignore[union-attr]


def test_a_hot_swap_serves_the_new_models_lists_not_the_cached_ones(
    registry_root: Path, svd_v1: Manifest
) -> None:
    service = make_service(registry_root)
    old = service.recommend(5)
    assert old is not None and old.model.version == svd_v1.version
    v2 = write_synthetic_model(registry_root, seed=2, **SIZES)
    assert service.holder.refresh()
    new = service.recommend(5)
    assert new is not None and new.model.version == v2.version
    uncached, _ = new.model.scorer.recommend(5, 20)
    assert new.items == uncached != old.items
    assert len(new.model.lists) == 1, "the new model starts from an empty cache"
    # A request still holding the old model keeps its old, consistent cache.
    assert old.model.lists.get(5) == (old.items, "personalized", ",".join(old.items))


def test_the_cache_is_bounded_by_its_setting(registry_root: Path, svd_v1: Manifest) -> None:
    service = make_service(registry_root, size=7)
    model = service.holder.current
    assert model is not None and model.lists.slots == 7
    for user_id in model.scorer.user_ids.tolist():
        service.recommend(user_id)
    assert len(model.lists) <= 7
    # never more slots than the model has known users
    assert make_service(registry_root, size=10**6).holder.current.lists.slots == SIZES["n_users"]  # type: ignore[union-attr]


def test_the_server_caches_by_default_and_can_be_told_not_to(
    registry_root: Path, svd_v1: Manifest
) -> None:
    for size, cached in ((None, True), (0, False)):
        kw = {} if size is None else {"list_cache_size": size}
        app = create_app(settings_for(registry_root, **kw))
        client: FlaskClient = app.test_client()
        try:
            a, b = client.get("/recommend/5"), client.get("/recommend/5")
            assert a.status_code == b.status_code == 200 and a.data == b.data
            model = runtime_of(app).holder.current
            assert model is not None
            assert (model.lists.get(5) is not None) is cached
        finally:
            runtime_of(app).stop()
