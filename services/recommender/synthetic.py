"""Synthetic artifacts in scoring.py's array conventions, for tests, benchmarks and smoke runs.

They let the recommender be exercised without the trainer: arrays are random but well-formed
(sorted user ids, in-range indices, distinct popularity lists), and seeded so runs repeat.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from services.common.artifacts import Manifest, Registry, write_artifact
from services.common.scoring import AGE_GROUPS

SEGMENTS = tuple(f"{g}|{a[0]}" for g in ("M", "F") for a in AGE_GROUPS)


def movie_id(i: int) -> str:
    """A slug-like movie id, as the stream spells them."""
    return f"synthetic+movie+{i}+{1950 + i % 70}"


def _distinct_rows(rng: np.random.Generator, rows: int, k: int, n: int) -> npt.NDArray[np.int64]:
    """``rows`` rows of ``k`` distinct indices below ``n``: a random start and stride per row.

    start + j·stride for j < k spans less than n when stride < n / k, so the values stay
    distinct modulo n; this avoids a rows × n shuffle, which would not fit in memory at scale.
    """
    start = rng.integers(0, n, size=(rows, 1))
    stride = rng.integers(1, max(2, n // max(k, 1)), size=(rows, 1))
    out: npt.NDArray[np.int64] = (start + np.arange(k) * stride) % n
    return out


def synthetic_arrays(
    family: str = "svd",
    *,
    n_users: int = 1000,
    n_items: int = 500,
    n_factors: int = 16,
    seen_per_user: int = 10,
    n_popular: int = 200,
    n_neighbors: int = 20,
    seed: int = 0,
) -> dict[str, npt.NDArray[Any]]:
    """Random, well-formed arrays for ``family``; users are ids 1..n_users."""
    rng = np.random.default_rng(seed)
    seen_per_user = min(seen_per_user, n_items)
    item_bias = (rng.standard_normal(n_items) * 0.3).astype(np.float32)
    popular = np.argsort(-item_bias, kind="stable").astype(np.int32)[: min(n_popular, n_items)]
    seen = _distinct_rows(rng, n_users, seen_per_user, n_items)
    seen_indices = np.sort(seen, axis=1).astype(np.int32).reshape(-1)
    seen_indptr = np.arange(n_users + 1, dtype=np.int64) * seen_per_user
    seg_popular = np.stack([rng.permutation(popular) for _ in SEGMENTS]).astype(np.int32)
    arrays: dict[str, npt.NDArray[Any]] = {
        "item_ids": np.array([movie_id(i) for i in range(n_items)]),
        "user_ids": np.arange(1, n_users + 1, dtype=np.int64),
        "seen_indptr": seen_indptr,
        "seen_indices": seen_indices,
        "popular": popular,
        "segment_keys": np.array(SEGMENTS),
        "segment_popular": seg_popular,
    }
    if family in ("svd", "als"):
        arrays |= {
            "user_factors": (rng.standard_normal((n_users, n_factors)) * 0.3).astype(np.float32),
            "item_factors": (rng.standard_normal((n_items, n_factors)) * 0.3).astype(np.float32),
            "user_bias": (rng.standard_normal(n_users) * 0.1).astype(np.float32),
            "item_bias": item_bias,
            "global_bias": np.array([3.5], dtype=np.float32),
        }
    elif family == "knn":
        k = min(n_neighbors, n_items)
        nbrs = _distinct_rows(rng, n_items, k, n_items)
        arrays |= {
            "knn_indptr": np.arange(n_items + 1, dtype=np.int64) * k,
            "knn_indices": nbrs.astype(np.int32).reshape(-1),
            "knn_sims": rng.random(n_items * k, dtype=np.float32),
            "seen_weights": (rng.standard_normal(len(seen_indices))).astype(np.float32),
            "item_bias": item_bias,
            "global_bias": np.array([3.5], dtype=np.float32),
        }
    elif family == "popularity":
        arrays["item_scores"] = -np.argsort(np.argsort(-item_bias)).astype(np.float32)
    else:
        raise ValueError(f"unknown family {family!r}")
    return arrays


def write_synthetic_model(
    registry_root: Path,
    name: str = "synthetic",
    family: str = "svd",
    *,
    channel: str | None = "stable",
    seed: int = 0,
    signing_key: bytes | None = None,
    **sizes: int,
) -> Manifest:
    """Write a synthetic artifact, register it (signed when given a key) and (optionally) point
    ``channel`` at it."""
    registry = Registry(registry_root, signing_key=signing_key)
    registry.root.mkdir(parents=True, exist_ok=True)
    staging = registry.root / f".staging-{name}-{family}-{seed}"
    manifest = write_artifact(
        staging,
        name=name,
        family=family,
        arrays=synthetic_arrays(family, seed=seed, **sizes),
        params={"family": family, "seed": seed, **sizes},
        snapshot={"content_hash": f"synthetic-{seed:08d}"},
        git_sha=f"synthetic{seed:07d}",
    )
    try:
        registry.register(staging, channel=channel)
    finally:
        import shutil

        shutil.rmtree(staging, ignore_errors=True)
    return manifest
