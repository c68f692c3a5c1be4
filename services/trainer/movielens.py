"""MovieLens 100K → snapshot tables, in memory (the data set's licence forbids copying it)."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from services.common.events import is_movie_id

NS = 1_000_000_000
WATCH_MINUTES = 90
"""ML-100K has no watch data: every rating stands for one full watch of this many minutes."""
_YEAR = re.compile(r"\s*\((\d{4})\)\s*$")


def slug(title: str, year: int | None) -> str:
    """A movie id in the stream's slug shape: ``Toy Story (1995)`` → ``toy+story+1995``."""
    text = unicodedata.normalize("NFC", title).lower().replace(",", "_").replace("&", "")
    words = []
    for raw in text.split():
        # keep only what the contract keeps: letters (ASCII or lower-case Latin-1), digits, _'.-
        w = "".join(
            c
            for c in raw
            if (c.isascii() and (c.isalnum() or c in "_'.-")) or ("ß" <= c <= "ÿ" and c not in "÷")
        )
        if w or raw == "&":
            words.append(w)
    body = "+".join(words).strip("+") or "untitled"
    if not re.search(r"[a-z0-9ß-ÿ]", body.split("+")[0]):
        body = "m" + body
    return f"{body}+{year if year else ''}"


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
    genres = (
        [
            line.split("|")[0]
            for line in (base / "u.genre").read_text(encoding="latin-1").splitlines()
            if line.strip()
        ]
        if (base / "u.genre").is_file()
        else [f"genre{i}" for i in range(19)]
    )

    ids: dict[int, str] = {}
    titles, years, genre_lists = [], [], []
    seen: dict[str, int] = {}
    for line in (base / "u.item").read_text(encoding="latin-1").splitlines():
        if not line.strip():
            continue
        parts = line.split("|")
        raw_title = parts[1]
        m = _YEAR.search(raw_title)
        year = int(m.group(1)) if m else None
        if year is None and parts[2][-4:].isdigit():
            year = int(parts[2][-4:])
        title = _YEAR.sub("", raw_title).strip() if m else raw_title.strip()
        base_slug = slug(title, year)
        # ML-100K lists a few films twice under two ids; the slug must stay unique
        seen[base_slug] = seen.get(base_slug, 0) + 1
        s = base_slug
        if seen[base_slug] > 1:
            head, _, tail = base_slug.rpartition("+")
            s = f"{head}+{seen[base_slug]}+{tail}"
        assert is_movie_id(s), s
        ids[int(parts[0])] = s
        titles.append(title)
        years.append(year)
        genre_lists.append([g for g, flag in zip(genres, parts[5:24], strict=False) if flag == "1"])

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
            "minutes": pa.array(np.full(n, WATCH_MINUTES, np.int32)),
            "max_minute": pa.array(np.full(n, WATCH_MINUTES, np.int32)),
            "first_ns": pa.array(time_ns),
            "last_ns": pa.array(time_ns),
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
