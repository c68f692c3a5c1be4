"""Model lifecycle without HTTP: verified loads, hot swaps, refused artifacts, the watcher."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from services.common.artifacts import ARRAYS_FILE, Manifest, Registry, write_artifact
from services.recommender.metrics import RecommenderMetrics
from services.recommender.model import ModelHolder
from services.recommender.service import RecommendationService
from services.recommender.synthetic import synthetic_arrays, write_synthetic_model
from tests.recommender.conftest import SIZES


def holder_on(
    root: Path, ref: str = "stable", **kw: float
) -> tuple[ModelHolder, RecommenderMetrics]:
    """A holder of the ``synthetic`` model and its metrics."""
    metrics = RecommenderMetrics()
    return ModelHolder(Registry(root), "synthetic", ref, metrics, **kw), metrics


def sample(metrics: RecommenderMetrics, name: str, **labels: str) -> float:
    """Current value of one sample in the app's own registry (0 when absent)."""
    v = metrics.registry.get_sample_value(name, labels)
    return 0.0 if v is None else v


def tamper(root: Path, version: str) -> None:
    """Flip bytes in the middle of a registered artifact's arrays, as corruption would."""
    path = root / "synthetic" / version / ARRAYS_FILE
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 8] = bytes(b ^ 0xFF for b in data[mid : mid + 8])
    path.write_bytes(bytes(data))


def test_hot_swap_keeps_in_flight_reference(registry_root: Path, svd_v1: Manifest) -> None:
    holder, metrics = holder_on(registry_root)
    assert holder.refresh()
    in_flight = holder.current
    assert in_flight is not None and in_flight.version == svd_v1.version
    v2 = write_synthetic_model(registry_root, seed=2, **SIZES)
    assert holder.refresh()
    assert holder.current is not None and holder.current.version == v2.version
    # The request that started on v1 still holds a complete, working v1.
    assert in_flight.version == svd_v1.version
    assert len(in_flight.scorer.recommend(3, 20)[0]) == 20
    assert not holder.refresh(), "no new version, no swap"
    assert sample(metrics, "marquee_recommender_model_loads_total", model_version=v2.version) == 1


def test_tampered_artifact_is_refused_and_old_model_keeps_serving(
    registry_root: Path, svd_v1: Manifest, caplog: pytest.LogCaptureFixture
) -> None:
    holder, metrics = holder_on(registry_root, load_retry_s=3600)
    holder.refresh()
    bad = write_synthetic_model(registry_root, seed=9, channel=None, **SIZES)
    tamper(registry_root, bad.version)
    Registry(registry_root).set_channel("synthetic", "stable", bad.version)
    with caplog.at_level(logging.ERROR, logger="marquee.recommender.model"):
        assert not holder.refresh()
    assert holder.current is not None and holder.current.version == svd_v1.version
    assert (
        sample(metrics, "marquee_recommender_model_load_failures_total", reason="verification") == 1
    )
    failure = next(r for r in caplog.records if "load failed" in r.getMessage())
    assert failure.target_version == bad.version  # type: ignore[attr-defined]
    assert "sha256 mismatch" in failure.error  # type: ignore[attr-defined]
    # The same broken version is not retried on every poll (no log or CPU storm).
    assert not holder.refresh()
    assert (
        sample(metrics, "marquee_recommender_model_load_failures_total", reason="verification") == 1
    )
    service = RecommendationService(holder, metrics)
    rec = service.recommend(3)
    assert rec is not None and rec.model.version == svd_v1.version


def test_inconsistent_arrays_are_refused(registry_root: Path, svd_v1: Manifest) -> None:
    holder, metrics = holder_on(registry_root)
    holder.refresh()
    arrays = synthetic_arrays("svd", seed=4, **SIZES)
    arrays["seen_indices"] = arrays["seen_indices"] + SIZES["n_items"]  # out of range
    bad_ids = synthetic_arrays("svd", seed=5, **SIZES)
    bad_ids["item_ids"] = np.array([f"a,b{i}" for i in range(SIZES["n_items"])])
    for n, arr in enumerate((arrays, bad_ids)):
        staging = registry_root.parent / f"stage{n}"
        write_artifact(
            staging, name="synthetic", family="svd", arrays=arr, params={"n": n}, snapshot={}
        )
        Registry(registry_root).register(staging, channel="stable")
        assert not holder.refresh()
        assert holder.current is not None and holder.current.version == svd_v1.version
    assert (
        sample(metrics, "marquee_recommender_model_load_failures_total", reason="verification") == 2
    )


def test_pinned_version_ignores_channel_moves(registry_root: Path, svd_v1: Manifest) -> None:
    holder, _ = holder_on(registry_root, ref=svd_v1.version)
    assert holder.refresh()
    write_synthetic_model(registry_root, seed=2, **SIZES)
    assert not holder.refresh()
    assert holder.current is not None and holder.current.version == svd_v1.version


def test_canary_channel(registry_root: Path, svd_v1: Manifest) -> None:
    canary = write_synthetic_model(registry_root, seed=7, channel="canary", **SIZES)
    holder, _ = holder_on(registry_root, ref="canary")
    holder.refresh()
    assert holder.current is not None and holder.current.version == canary.version


def test_missing_registry_is_not_ready_but_does_not_crash(tmp_path: Path) -> None:
    holder, _ = holder_on(tmp_path / "nowhere")
    assert not holder.refresh()
    assert not holder.ready


def test_watcher_swaps_and_model_info_follows(registry_root: Path, svd_v1: Manifest) -> None:
    holder, metrics = holder_on(registry_root, poll_interval_s=0.02)
    holder.refresh()
    holder.start()
    try:
        v2 = write_synthetic_model(registry_root, seed=2, **SIZES)
        deadline = time.monotonic() + 5
        while holder.current.version != v2.version and time.monotonic() < deadline:  # type: ignore[union-attr]
            time.sleep(0.01)
        assert holder.current is not None and holder.current.version == v2.version
    finally:
        holder.stop()
    info = "marquee_recommender_model_info"
    common = {"model_name": "synthetic", "family": "svd"}
    old = {
        **common,
        "model_version": svd_v1.version,
        "snapshot_hash": "synthetic-00000001",
        "git_sha": svd_v1.git_sha,
    }
    new = {
        **common,
        "model_version": v2.version,
        "snapshot_hash": "synthetic-00000002",
        "git_sha": v2.git_sha,
    }
    assert sample(metrics, info, **old) == 0
    assert sample(metrics, info, **new) == 1


def test_concurrent_requests_during_repeated_swaps_never_fail(
    registry_root: Path, svd_v1: Manifest
) -> None:
    versions = [svd_v1] + [
        write_synthetic_model(registry_root, seed=s, channel=None, **SIZES) for s in (11, 12)
    ]
    registry = Registry(registry_root)
    holder, metrics = holder_on(registry_root, load_retry_s=0.001)
    holder.refresh()
    service = RecommendationService(holder, metrics)
    stop = threading.Event()
    errors: list[BaseException] = []
    seen_versions: set[str] = set()

    def hammer(seed: int) -> None:
        rng = np.random.default_rng(seed)
        while not stop.is_set():
            try:
                rec = service.recommend(int(rng.integers(1, SIZES["n_users"] * 2)))
                assert rec is not None and len(rec.items) == 20 == len(set(rec.items))
                seen_versions.add(rec.model.version)
            except BaseException as exc:
                errors.append(exc)
                return

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for i in range(9):
        registry.set_channel("synthetic", "stable", versions[i % 3].version)
        holder.refresh()
    stop.set()
    for t in threads:
        t.join()
    assert not errors
    assert len(seen_versions) >= 2
