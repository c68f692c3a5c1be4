"""Movie ids, defined once: the stream's slug of a title and year, and the ids of MovieLens 100K.

The simulator's catalog and the trainer's MovieLens reader both name movies here, so a model
trained on ML-100K and a simulated world seeded from it speak the same ids.
"""

from __future__ import annotations

import datetime as _dt
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from services.common.events import is_movie_id

__all__ = ["ARTICLES", "MovieLensItem", "movie_slug", "read_movielens_items", "unique_movie_ids"]

ARTICLES: Final = ("The", "A", "An", "Les", "La", "Le", "Il", "Das", "Der", "Die", "El", "L'")
"""Articles that catalogs move behind a comma (``Usual Suspects, The``) and slugs put first."""
_ARTICLE_RE: Final = re.compile(rf"^(.*?), ({'|'.join(ARTICLES)})((?:\s+\(.*\))?)$")
# What a slug keeps: lower-case letters (accented Latin too), digits, ' . - and the '_' that
# commas become; everything else goes (the contract's rules, stream-format.md section 1).
_DROP_RE: Final = re.compile(r"[^a-z0-9\u00df-\u00f6\u00f8-\u00ff'.\-_ ]")
_MAX_BODY: Final = 240
_ML_YEAR_RE: Final = re.compile(r"\s*\((\d{4})\)\s*$")


def _article_first(title: str) -> str:
    """``Empire Strikes Back, The`` -> ``The Empire Strikes Back`` (an alternate title kept)."""
    m = _ARTICLE_RE.match(title)
    if m is None:
        return title
    return f"{m.group(2)} {m.group(1)}{m.group(3)}"


def movie_slug(title: str, year: int | None) -> str:
    """The stream's movie id of a title: ``Empire Strikes Back, The``, 1980 ->
    ``the+empire+strikes+back+1980``.

    Lower-cased words joined by '+', then '+<year>' (or a bare '+' without one); commas become
    '_', '&' disappears leaving '++', apostrophes, dots, digits and '-' stay, other
    punctuation goes; a trailing article moves to the front.  A title with nothing left
    becomes ``untitled``.
    """
    text = _article_first(" ".join(unicodedata.normalize("NFC", title).split()))
    text = _DROP_RE.sub("", text.lower().replace(",", "_").replace("&", ""))
    body = "+".join(text.split(" ")).strip("+")[:_MAX_BODY].strip("+")
    slug = f"{body}+{year}" if year else f"{body}+"
    if not body or not is_movie_id(slug):
        return f"untitled+{year}" if year else "untitled+"
    return slug


def unique_movie_ids(slugs: Iterable[str]) -> list[str]:
    """``slugs`` in order, repeats numbered before the year (``hamlet+2+1996``) so ids differ."""
    out: list[str] = []
    seen: set[str] = set()
    for slug in slugs:
        candidate, k = slug, 2
        head, _, tail = slug[:-1].rpartition("+") if slug.endswith("+") else slug.rpartition("+")
        while candidate in seen:
            candidate = f"{slug[:-1]}+{k}+" if slug.endswith("+") else f"{head}+{k}+{tail}"
            k += 1
        seen.add(candidate)
        out.append(candidate)
    return out


@dataclass(frozen=True)
class MovieLensItem:
    """One movie of ML-100K's ``u.item``, named as the stream names it."""

    ml_id: int
    """The movie's number in ``u.data`` and ``u.item``."""
    movie_id: str
    """The stream's slug (unique across the file)."""
    title: str
    """Display title, article first, without the year."""
    year: int | None
    genres: tuple[str, ...]
    """MovieLens genre names (``u.genre``)."""
    release_day: int
    """Release date as a proleptic Gregorian ordinal, or -1 when unknown."""


def read_movielens_items(folder: Path | str) -> list[MovieLensItem]:
    """Every movie of ML-100K's ``u.item`` (all 1,682, in file order) with its stream id."""
    base = Path(folder)
    genre_file = base / "u.genre"
    names = (
        [
            line.split("|")[0]
            for line in genre_file.read_text(encoding="latin-1").splitlines()
            if line.strip()
        ]
        if genre_file.is_file()
        else [f"genre{i}" for i in range(19)]
    )
    rows: list[tuple[int, str, int | None, tuple[str, ...], int]] = []
    for line in (base / "u.item").read_text(encoding="latin-1").splitlines():
        if not line.strip():
            continue
        f = line.split("|")
        raw, released = f[1], f[2]
        m = _ML_YEAR_RE.search(raw)
        # A title without "(1995)" takes the year of its release date, when it has one.
        year = int(m.group(1)) if m else (int(released[-4:]) if released[-4:].isdigit() else None)
        title = _article_first((_ML_YEAR_RE.sub("", raw) if m else raw).strip())
        flags = f[5 : 5 + len(names)]
        genres = tuple(n for n, flag in zip(names, flags, strict=False) if flag == "1")
        try:
            day = _dt.datetime.strptime(released, "%d-%b-%Y").date().toordinal()
        except ValueError:
            day = -1
        rows.append((int(f[0]), title, year, genres, day))
    ids = unique_movie_ids(movie_slug(title, year) for _, title, year, _, _ in rows)
    return [
        MovieLensItem(ml_id, movie_id, title, year, genres, day)
        for (ml_id, title, year, genres, day), movie_id in zip(rows, ids, strict=True)
    ]
