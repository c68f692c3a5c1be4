"""Helpers shared by the trainer tests: snapshot tables written out row by row."""

from __future__ import annotations

import pyarrow as pa

from services.trainer import synthetic


def snapshot_tables(
    watches: list[tuple[int, str, int, int]],
    ratings: list[tuple[int, str, int, int]],
    movies: pa.Table | None = None,
) -> dict[str, pa.Table]:
    """Snapshot tables from (user, movie, time, minutes) and (user, movie, time, rating) rows.

    No users; ``movies`` (default: none) as the snapshot's movies table.
    """
    inter = pa.table(
        {
            "user_id": pa.array([w[0] for w in watches], pa.int64()),
            "movie_id": pa.array([w[1] for w in watches], pa.string()),
            "time_ns": pa.array([w[2] for w in watches], pa.int64()),
            "minutes": pa.array([w[3] for w in watches], pa.int32()),
            "max_minute": pa.array([w[3] for w in watches], pa.int32()),
        }
    )
    rates = pa.table(
        {
            "user_id": pa.array([r[0] for r in ratings], pa.int64()),
            "movie_id": pa.array([r[1] for r in ratings], pa.string()),
            "rating": pa.array([r[3] for r in ratings], pa.int8()),
            "time_ns": pa.array([r[2] for r in ratings], pa.int64()),
        }
    )
    empty = synthetic.generate(n_users=1, n_items=1, seed=0)[0]
    return {
        "interactions": inter,
        "ratings": rates,
        "users": empty["users"].slice(0, 0),
        "movies": empty["movies"].slice(0, 0) if movies is None else movies,
    }
