"""MovieLens 100K → snapshot tables, in memory (the data set's licence forbids copying it)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from services.common.movies import read_movielens_items

NS = 1_000_000_000
WATCH_MINUTES = 90
"""ML-100K has no watch data: every rating stands for one full watch of this many minutes."""


def _hash_files(paths: list[Path]) -> str:
    """sha256 over the files' own sha256s: the data set's identity."""
    h = hashlib.sha256()
    for p in paths:
        h.update(hashlib.sha256(p.read_bytes()).hexdigest().encode())
    return h.hexdigest()


def load_tables(folder: Path | str) -> tuple[dict[str, pa.Table], dict[str, Any]]:
    """The four snapshot tables of ML-100K and a provenance record (hash of the raw files)."""
    base = Path(folder)
    files = [base / "u.data", base / "u.user", base / "u.item"]
    for f in files:
        if not f.is_file():
            raise FileNotFoundError(f"MovieLens 100K file {f} not found")
    # The ids are the stream's slugs, defined once in services.common.movies: the simulator's
    # MovieLens catalog names the same titles with the same ids.
    items = read_movielens_items(base)
    ids = {it.ml_id: it.movie_id for it in items}
    titles = [it.title for it in items]
    years = [it.year for it in items]
    genre_lists = [list(it.genres) for it in items]

    data = np.loadtxt(base / "u.data", dtype=np.int64, ndmin=2)
    users_raw = [
        line.split("|")
        for line in (base / "u.user").read_text(encoding="latin-1").splitlines()
        if line.strip()
    ]
    movie_of = np.array([ids.get(int(i), "") for i in data[:, 1]], dtype=object)
    time_ns = data[:, 3] * NS
    n = len(data)
    ratings = pa.table(
        {
            "user_id": pa.array(data[:, 0]),
            "movie_id": pa.array(movie_of.tolist(), pa.string()),
            "rating": pa.array(data[:, 2].astype(np.int8)),
            "time_ns": pa.array(time_ns),
        }
    )
    interactions = pa.table(
        {
            "user_id": pa.array(data[:, 0]),
            "movie_id": pa.array(movie_of.tolist(), pa.string()),
            "time_ns": pa.array(time_ns),
            "minutes": pa.array(np.full(n, WATCH_MINUTES, np.int32)),
            "max_minute": pa.array(np.full(n, WATCH_MINUTES, np.int32)),
        }
    )
    users = pa.table(
        {
            "user_id": pa.array([int(u[0]) for u in users_raw], pa.int64()),
            "age": pa.array([int(u[1]) for u in users_raw], pa.int16()),
            "gender": pa.array([u[2] for u in users_raw], pa.string()),
            "occupation": pa.array([u[3] for u in users_raw], pa.string()),
        }
    )
    order = list(ids)
    movies = pa.table(
        {
            "movie_id": pa.array([ids[i] for i in order], pa.string()),
            "title": pa.array(titles, pa.string()),
            "year": pa.array(years, pa.int16()),
            "genres": pa.array(genre_lists, pa.list_(pa.string())),
            "original_language": pa.nulls(len(order), pa.string()),
            "runtime": pa.nulls(len(order), pa.int32()),
            "popularity": pa.nulls(len(order), pa.float64()),
            "vote_average": pa.nulls(len(order), pa.float64()),
            "vote_count": pa.nulls(len(order), pa.int64()),
        }
    )
    tables = {"interactions": interactions, "ratings": ratings, "users": users, "movies": movies}
    provenance = {
        "source": f"movielens:{base}",
        "content_hash": _hash_files(files),
        "time_range": {"min_ns": int(time_ns.min()), "max_ns": int(time_ns.max())},
        "until_ns": int(time_ns.max()) + 1,
        "row_counts": {k: v.num_rows for k, v in tables.items()},
    }
    return tables, provenance
