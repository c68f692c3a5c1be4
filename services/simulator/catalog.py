"""The movie catalog: slugs with the real stream's quirks and TMDB-shaped metadata.

Struct-of-arrays: one numpy array (or one list of strings) per field, never one object per
movie.  Synthetic by default; ``movielens:<dir>`` seeds titles, years and genres from the
MovieLens 100K ``u.item`` file and fills the rest of the catalog synthetically.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from services.common.movies import movie_slug, read_movielens_items

GENRES: Final[tuple[tuple[int, str], ...]] = (
    (28, "Action"),
    (12, "Adventure"),
    (16, "Animation"),
    (35, "Comedy"),
    (80, "Crime"),
    (99, "Documentary"),
    (18, "Drama"),
    (10751, "Family"),
    (14, "Fantasy"),
    (36, "History"),
    (27, "Horror"),
    (10402, "Music"),
    (9648, "Mystery"),
    (10749, "Romance"),
    (878, "Science Fiction"),
    (10770, "TV Movie"),
    (53, "Thriller"),
    (10752, "War"),
    (37, "Western"),
)
"""TMDB genres (id, name) in the column order of the genre matrix."""
N_GENRES: Final = len(GENRES)
_GENRE_INDEX: Final = {name: i for i, (_, name) in enumerate(GENRES)}
# MovieLens genre names -> TMDB genre names (Film-Noir has no TMDB genre; Crime is closest).
_ML_GENRES: Final = {
    "Action": "Action",
    "Adventure": "Adventure",
    "Animation": "Animation",
    "Children's": "Family",
    "Comedy": "Comedy",
    "Crime": "Crime",
    "Documentary": "Documentary",
    "Drama": "Drama",
    "Fantasy": "Fantasy",
    "Film-Noir": "Crime",
    "Horror": "Horror",
    "Musical": "Music",
    "Mystery": "Mystery",
    "Romance": "Romance",
    "Sci-Fi": "Science Fiction",
    "Thriller": "Thriller",
    "War": "War",
    "Western": "Western",
}
# How common each genre is in a synthetic catalog (roughly TMDB's shares).
_GENRE_WEIGHTS: Final = np.array(
    [14, 8, 4, 22, 9, 5, 30, 5, 5, 3, 7, 3, 5, 11, 6, 2, 12, 2, 1], dtype=np.float64
)
LANGUAGES: Final = ("en", "fr", "es", "de", "it", "ja", "ko", "hi", "zh", "ru", "sv", "pt")
_LANG_WEIGHTS: Final = np.array([74, 6, 4, 3, 3, 3, 2, 1.5, 1.5, 1, 0.5, 0.5], dtype=np.float64)

_WORDS_ADJ: Final = [
    "lost",
    "silent",
    "red",
    "dark",
    "last",
    "golden",
    "broken",
    "hidden",
    "wild",
    "secret",
    "cold",
    "bright",
    "long",
    "little",
    "final",
    "blue",
    "quiet",
    "strange",
    "burning",
    "endless",
    "sweet",
    "savage",
    "hollow",
    "iron",
    "crimson",
    "lonely",
    "midnight",
    "forgotten",
    "eternal",
    "electric",
    "fallen",
    "frozen",
]
_WORDS_NOUN: Final = [
    "harbor",
    "river",
    "night",
    "glass",
    "road",
    "city",
    "summer",
    "winter",
    "heart",
    "dream",
    "garden",
    "house",
    "storm",
    "shadow",
    "mountain",
    "island",
    "kingdom",
    "empire",
    "voyage",
    "stranger",
    "promise",
    "mirror",
    "machine",
    "letter",
    "game",
    "crossing",
    "station",
    "witness",
    "frontier",
    "circus",
    "fortune",
    "ghost",
    "moon",
    "sea",
    "valley",
]
_NAMES: Final = [
    "anna",
    "jack",
    "mary",
    "lola",
    "frank",
    "sam",
    "rosa",
    "max",
    "juliet",
    "oscar",
    "nina",
    "tom",
    "cheech",
    "chong",
    "laurel",
    "hardy",
    "bonnie",
    "clyde",
    "thelma",
    "louise",
]
_ACCENTED: Final = ("amélie", "café", "señor", "über", "déjà", "naïve", "mañana", "noël")

DEFAULT_MOVIES: Final = 27_000
"""Size of a synthetic catalog when none is asked for."""


@dataclass
class Catalog:
    """All movies as parallel arrays; index ``i`` is movie ``ids[i]``."""

    ids: list[str]
    titles: list[str]
    years: npt.NDArray[np.int16]
    genres: npt.NDArray[np.bool_]
    language: npt.NDArray[np.int8]
    release_day: npt.NDArray[np.int32]
    runtime: npt.NDArray[np.int16]
    adult: npt.NDArray[np.bool_]
    popularity: npt.NDArray[np.float32]
    vote_average: npt.NDArray[np.float32]
    vote_count: npt.NDArray[np.int32]
    tmdb_id: npt.NDArray[np.int32]
    imdb_id: npt.NDArray[np.int32]
    quality: npt.NDArray[np.float32]
    """Hidden: how good a movie is for everyone (drives vote_average and taste)."""

    def __post_init__(self) -> None:
        self.index: dict[str, int] = {m: i for i, m in enumerate(self.ids)}

    def __len__(self) -> int:
        return len(self.ids)

    def genre_list(self, i: int) -> list[dict[str, Any]]:
        """Genres of movie ``i`` as TMDB ``{"id", "name"}`` objects."""
        return [{"id": GENRES[g][0], "name": GENRES[g][1]} for g in np.flatnonzero(self.genres[i])]

    def to_json(self, i: int) -> dict[str, Any]:
        """The movie API's document for movie ``i``: most scalars are strings, as upstream."""
        day = int(self.release_day[i])
        release = "" if day < 0 else dt.date.fromordinal(day).isoformat()
        title = self.titles[i]
        return {
            "id": self.ids[i],
            "tmdb_id": int(self.tmdb_id[i]),
            "imdb_id": f"tt{int(self.imdb_id[i]):07d}",
            "title": title,
            "original_title": title,
            "adult": "True" if self.adult[i] else "False",
            "belongs_to_collection": {},
            "budget": "0",
            "genres": self.genre_list(i),
            "homepage": "null",
            "original_language": LANGUAGES[int(self.language[i])],
            "overview": f"{title}.",
            "popularity": f"{float(self.popularity[i]):.6f}",
            "poster_path": f"/{self.ids[i][:12].replace('+', '')}.jpg",
            "production_companies": [],
            "production_countries": [],
            "release_date": release,
            "revenue": "0",
            "runtime": int(self.runtime[i]),
            "spoken_languages": [],
            "status": "Released",
            "vote_average": f"{float(self.vote_average[i]):.1f}",
            "vote_count": str(int(self.vote_count[i])),
        }


def _synthetic_title(rng: np.random.Generator) -> str:
    """A title with the quirks real ones have: commas, '&', apostrophes, dots, digits."""
    r = rng.random()
    adj = _WORDS_ADJ[rng.integers(len(_WORDS_ADJ))]
    noun = _WORDS_NOUN[rng.integers(len(_WORDS_NOUN))]
    noun2 = _WORDS_NOUN[rng.integers(len(_WORDS_NOUN))]
    name = _NAMES[rng.integers(len(_NAMES))]
    name2 = _NAMES[rng.integers(len(_NAMES))]
    if r < 0.25:
        t = f"The {adj} {noun}"
    elif r < 0.40:
        t = f"{noun} of {noun2}"
    elif r < 0.50:
        t = f"{adj} {noun}"
    elif r < 0.56:
        t = f"{name} & {name2}"
    elif r < 0.62:
        t = f"{name}'s {noun}"
    elif r < 0.67:
        t = f"{noun}s, {noun2}s and {name}"
    elif r < 0.71:
        t = f"Dr. {name}"
    elif r < 0.75:
        t = f"{int(rng.integers(2, 13))} {noun}s"
    elif r < 0.78:
        t = f"{adj}-{noun}"
    elif r < 0.81:
        t = f"{_ACCENTED[rng.integers(len(_ACCENTED))]} {noun}"
    elif r < 0.86:
        t = f"{name} and the {adj} {noun}"
    elif r < 0.90:
        t = f"{noun}: {adj} {noun2}"
    else:
        t = f"A {noun} in the {noun2}"
    return " ".join(w[:1].upper() + w[1:] for w in t.split(" "))


def _ml_items(folder: Path) -> list[tuple[str, str, int | None, list[int], int]]:
    """(id, title, year, genre columns, release day) of every ML-100K movie, as the trainer has
    them: the ids come from the one MovieLens reader in ``services.common.movies``."""
    out: list[tuple[str, str, int | None, list[int], int]] = []
    for it in read_movielens_items(folder):
        cols = sorted({_GENRE_INDEX[_ML_GENRES[g]] for g in it.genres if g in _ML_GENRES})
        out.append((it.movie_id, it.title, it.year, cols, it.release_day))
    return out


def build_catalog(
    n_movies: int | None, rng: np.random.Generator, source: str = "synthetic"
) -> Catalog:
    """Build ``n_movies`` movies deterministically from ``rng`` (and MovieLens when asked).

    ``movielens:<dir>`` puts ML-100K's movies first, with the ids the trainer gives them;
    ``n_movies`` None means exactly those (1,682), or 27,000 synthetic ones.
    """
    seeded: list[tuple[str, str, int | None, list[int], int]] = []
    if source.startswith("movielens:"):
        seeded = _ml_items(Path(source.split(":", 1)[1]))[:n_movies]
    elif source != "synthetic":
        raise ValueError(f"unknown catalog source {source!r}: use synthetic or movielens:<dir>")
    n = n_movies if n_movies is not None else (len(seeded) or DEFAULT_MOVIES)
    titles: list[str] = []
    years = np.zeros(n, np.int16)
    genres = np.zeros((n, N_GENRES), np.bool_)
    release = np.full(n, -1, np.int32)
    gp = _GENRE_WEIGHTS / _GENRE_WEIGHTS.sum()
    # Years skew recent, as catalogs do; a few movies have no year at all (slug ends in '+').
    syn_years = np.clip(2025 - rng.gamma(1.6, 12.0, n).astype(np.int64), 1915, 2025)
    no_year = rng.random(n) < 0.004
    n_genres = rng.choice([1, 2, 3, 4], size=n, p=[0.35, 0.4, 0.2, 0.05])
    for i in range(n):
        if i < len(seeded):
            _, t, y, cols, day = seeded[i]
            titles.append(t)
            years[i] = y or 0
            genres[i, cols] = True
            release[i] = day
        else:
            titles.append(_synthetic_title(rng))
            years[i] = 0 if no_year[i] else syn_years[i]
            genres[i, rng.choice(N_GENRES, size=n_genres[i], replace=False, p=gp)] = True
            if years[i]:
                release[i] = dt.date(int(years[i]), 1, 1).toordinal() + int(rng.integers(365))
    ids = [m for m, *_ in seeded]
    seen: set[str] = set(ids)
    for i in range(len(seeded), n):
        t = titles[i]
        y = int(years[i]) or None
        slug = movie_slug(t, y)
        k = 2
        base = t
        while slug in seen:  # remakes and repeats: number them so every id stays unique
            t = f"{base} {k}"
            slug = movie_slug(t, y)
            k += 1
        titles[i] = t
        seen.add(slug)
        ids.append(slug)
    quality = rng.normal(0.0, 1.0, n).astype(np.float32)
    # Popularity is heavy-tailed and only loosely tied to quality.
    log_pop = rng.normal(0.0, 1.0, n) + 0.3 * quality
    popularity = np.exp(1.2 + 1.1 * log_pop).astype(np.float32)
    vote_count = np.maximum(0, (popularity * rng.lognormal(3.0, 0.6, n))).astype(np.int32)
    vote_average = np.clip(6.2 + 0.9 * quality + rng.normal(0, 0.4, n), 1.0, 9.6)
    vote_avg32 = np.where(vote_count == 0, 0.0, vote_average).astype(np.float32)
    lp = _LANG_WEIGHTS / _LANG_WEIGHTS.sum()
    return Catalog(
        ids=ids,
        titles=titles,
        years=years,
        genres=genres,
        language=rng.choice(len(LANGUAGES), size=n, p=lp).astype(np.int8),
        release_day=release,
        runtime=np.clip(rng.normal(104, 20, n), 62, 220).astype(np.int16),
        adult=rng.random(n) < 0.002,
        popularity=popularity,
        vote_average=vote_avg32,
        vote_count=vote_count,
        tmdb_id=(rng.permutation(n) * 7 + 11 + rng.integers(0, 7, n)).astype(np.int32),
        imdb_id=(rng.permutation(n) * 31 + 35_000 + rng.integers(0, 31, n)).astype(np.int32),
        quality=quality,
    )
