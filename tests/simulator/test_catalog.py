"""The catalog: slugs with the stream's quirks, unique ids, TMDB-shaped metadata."""

from __future__ import annotations

import numpy as np
import pytest

from services.common.events import is_movie_id
from services.simulator.catalog import GENRES, build_catalog, slugify
from services.simulator.world import World


@pytest.mark.parametrize(
    ("title", "year", "slug"),
    [
        ("The Godfather", 1972, "the+godfather+1972"),
        ("Monsters, Inc.", 2001, "monsters_+inc.+2001"),
        ("Cheech & Chong", 1985, "cheech++chong+1985"),
        ("Heaven's Gate", 1980, "heaven's+gate+1980"),
        ("Spider-Man 2", 2004, "spider-man+2+2004"),
        ("Star Wars: Episode IV", 1977, "star+wars+episode+iv+1977"),
        ("Amélie", 2001, "amélie+2001"),
        ("Untitled Project", None, "untitled+project+"),
    ],
)
def test_slugify_keeps_the_real_quirks(title: str, year: int | None, slug: str) -> None:
    assert slugify(title, year) == slug
    assert is_movie_id(slug)


def test_synthetic_ids_are_unique_valid_and_quirky(small_world: World) -> None:
    ids = small_world.catalog.ids
    assert len(ids) == 1_500 == len(set(ids))
    assert all(is_movie_id(m) for m in ids)
    assert any("_" in m for m in ids)
    assert any("++" in m for m in ids)
    assert any(m.endswith("+") for m in build_catalog(27_000, np.random.default_rng(1)).ids)


def test_movie_document_is_shaped_like_the_contract(small_world: World) -> None:
    doc = small_world.catalog.to_json(0)
    for key in ("adult", "budget", "popularity", "vote_average", "vote_count", "revenue"):
        assert isinstance(doc[key], str), key
    assert isinstance(doc["tmdb_id"], int)
    assert isinstance(doc["runtime"], int)
    assert doc["imdb_id"].startswith("tt")
    assert doc["id"] == small_world.catalog.ids[0]
    assert doc["adult"] in ("True", "False")
    known = dict(GENRES)
    assert doc["genres"] and all(known[g["id"]] == g["name"] for g in doc["genres"])
    float(doc["popularity"]), float(doc["vote_average"]), int(doc["vote_count"])


def test_movielens_catalog_seeds_titles_years_and_genres(ml100k: str) -> None:
    cat = build_catalog(2_000, np.random.default_rng(0), f"movielens:{ml100k}")
    assert cat.ids[0] == "toy+story+1995"
    assert "the+usual+suspects+1995" in cat.index
    assert "the+truth+about+cats++dogs+1996" in cat.index
    assert len(set(cat.ids)) == 2_000
    assert all(is_movie_id(m) for m in cat.ids)
    toy = cat.to_json(0)
    assert {g["name"] for g in toy["genres"]} == {"Animation", "Family", "Comedy"}
    assert toy["release_date"] == "1995-01-01"


def test_unknown_catalog_source_is_refused() -> None:
    with pytest.raises(ValueError, match="catalog source"):
        build_catalog(100, np.random.default_rng(0), "imdb:/nowhere")
