"""A small latent-factor world written as a snapshot: for tests, benchmarks and a cluster-free demo.

Users belong to taste clusters that depend on their demographic segment; a movie's chance of
being watched is its popularity (Zipf) times the cluster's affinity to it; how much of it is
watched and how it is rated follow the user's own affinity.  Fully vectorized (NumPy), seeded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from services.common.snapshot import write_snapshot

NS = 1_000_000_000
START_NS = 1_767_225_600 * NS  # 2026-01-01T00:00:00


def generate(
    n_users: int = 2000,
    n_items: int = 500,
    mean_watches: float = 5.5,
    rating_share: float = 0.2,
    days: float = 30.0,
    dims: int = 16,
    clusters: int = 32,
    seed: int = 0,
) -> tuple[dict[str, pa.Table], int]:
    """The four snapshot tables of a synthetic world, and its end time (until_ns)."""
    rng = np.random.default_rng(seed)
    # --- movies: Zipf popularity and latent factors
    pop = -1.1 * np.log1p(rng.permutation(n_items).astype(np.float64))
    item_f = rng.normal(0, 1 / np.sqrt(dims), (n_items, dims)).astype(np.float32)
    years = rng.integers(1940, 2026, n_items)
    movie_ids = np.array([f"movie+{n:05d}+{y}" for n, y in enumerate(years)])
    runtime = rng.integers(80, 160, n_items)
    # --- users: segment → cluster → taste
    gender = np.where(rng.random(n_users) < 0.6, "M", "F")
    age = np.clip(rng.gamma(6.0, 5.5, n_users), 8, 90).astype(np.int16)
    age_bin = np.digitize(age, [13, 20, 36, 56])
    segment = (gender == "F").astype(np.int64) * 5 + age_bin
    seg_pref = rng.normal(0, 1.5, (10, clusters))
    seg_p = np.exp(seg_pref) / np.exp(seg_pref).sum(1, keepdims=True)
    cluster = np.empty(n_users, np.int64)
    for s in range(10):
        members = np.flatnonzero(segment == s)
        cluster[members] = rng.choice(clusters, len(members), p=seg_p[s])
    centroids = rng.normal(0, 1, (clusters, dims)).astype(np.float32)
    user_f = (centroids[cluster] + rng.normal(0, 0.6, (n_users, dims))).astype(np.float32)
    logits = pop[None, :] + 2.0 * (centroids @ item_f.T)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    cdf = np.cumsum(probs, axis=1)
    cdf /= cdf[:, -1:]
    # --- watches
    activity = rng.gamma(0.8, max(mean_watches - 1, 0.01) / 0.8, n_users)
    counts = 1 + rng.poisson(activity)
    users = np.repeat(np.arange(n_users), counts)
    items = np.empty(len(users), np.int64)
    draw_cluster = cluster[users]
    u01 = rng.random(len(users))
    for c in range(clusters):
        sel = draw_cluster == c
        items[sel] = np.minimum(np.searchsorted(cdf[c], u01[sel]), n_items - 1)
    keys = np.unique(users.astype(np.int64) * n_items + items)
    users, items = np.divmod(keys, n_items)
    n = len(keys)
    affinity = np.empty(n, np.float32)
    for lo in range(0, n, 1 << 20):
        hi = min(lo + (1 << 20), n)
        affinity[lo:hi] = np.einsum("ij,ij->i", user_f[users[lo:hi]], item_f[items[lo:hi]])
    z = (affinity - affinity.mean()) / (affinity.std() + 1e-9)
    frac = 1 / (1 + np.exp(-(0.3 + 1.2 * z + rng.normal(0, 0.8, n))))
    minutes = np.maximum(1, np.round(frac * runtime[items])).astype(np.int32)
    first = START_NS + (rng.random(n) * days * 86_400 * NS).astype(np.int64)
    last = first + minutes.astype(np.int64) * 60 * NS
    # --- ratings: more likely after watching most of a movie
    rated = rng.random(n) < rating_share * (0.5 + frac)
    stars = np.clip(np.round(3.2 + 1.1 * z + rng.normal(0, 0.7, n)), 1, 5).astype(np.int8)
    until = int(last.max()) + 3600 * NS if n else START_NS

    def movie_col(idx: np.ndarray) -> pa.Array:
        """Movie ids of item indices as a string column (built from a dictionary)."""
        return pa.DictionaryArray.from_arrays(
            pa.array(idx.astype(np.int32)), pa.array(movie_ids)
        ).cast(pa.string())

    user_ids = users + 1
    # a session in the snapshot's grain: minute 0 when it starts, the other minutes stamped
    # with the time of the last one (a period cut inside a session keeps only minute 0)
    rest = minutes > 1
    tables = {
        "interactions": pa.table(
            {
                "user_id": np.r_[user_ids, user_ids[rest]],
                "movie_id": movie_col(np.r_[items, items[rest]]),
                "time_ns": np.r_[first, last[rest] - 60 * NS],
                "minutes": np.r_[np.ones(n, np.int32), minutes[rest] - 1],
                "max_minute": np.r_[np.zeros(n, np.int32), minutes[rest] - 1],
            }
        ),
        "ratings": pa.table(
            {
                "user_id": user_ids[rated],
                "movie_id": movie_col(items[rated]),
                "rating": stars[rated],
                "time_ns": last[rated] + 30 * NS,
            }
        ),
        "users": pa.table(
            {
                "user_id": np.arange(1, n_users + 1, dtype=np.int64),
                "age": age,
                "gender": gender.tolist(),
                "occupation": pa.nulls(n_users, pa.string()),
            }
        ),
        "movies": pa.table(
            {
                "movie_id": movie_ids.tolist(),
                "title": [f"Movie {n}" for n in range(n_items)],
                "year": years.astype(np.int16),
                "genres": pa.nulls(n_items, pa.list_(pa.string())),
                "original_language": pa.nulls(n_items, pa.string()),
                "runtime": runtime.astype(np.int32),
                "popularity": pa.nulls(n_items, pa.float64()),
                "vote_average": pa.nulls(n_items, pa.float64()),
                "vote_count": pa.nulls(n_items, pa.int64()),
            }
        ),
    }
    return tables, until


def write(out: Path | str, **kwargs: Any) -> dict[str, Any]:
    """Generate a world with ``generate(**kwargs)`` and write it as a snapshot; its manifest."""
    tables, until = generate(**kwargs)
    return write_snapshot(
        out,
        tables=tables,
        until_ns=until,
        source={"generator": "services.trainer.synthetic", **kwargs},
    )
