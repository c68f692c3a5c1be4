"""Movie ids defined once: the contract's slug rules and ML-100K's ids for every service."""

from __future__ import annotations

import pytest

from services.common.events import is_movie_id
from services.common.movies import movie_slug, read_movielens_items, unique_movie_ids


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
        # MovieLens writes the article last; the stream (TMDB titles) has it first.
        ("Empire Strikes Back, The", 1980, "the+empire+strikes+back+1980"),
        ("Truth About Cats & Dogs, The", 1996, "the+truth+about+cats++dogs+1996"),
        (
            "Horseman on the Roof, The (Hussard sur le toit, Le)",
            1995,
            "the+horseman+on+the+roof+hussard+sur+le+toit_+le+1995",
        ),
        ("  Two   Friends ", 1986, "two+friends+1986"),
        ("???", 1999, "untitled+1999"),
    ],
)
def test_movie_slug_follows_the_contract(title: str, year: int | None, slug: str) -> None:
    assert movie_slug(title, year) == slug
    assert is_movie_id(slug)


def test_repeated_slugs_are_numbered_before_the_year() -> None:
    got = unique_movie_ids(["hamlet+1996", "hamlet+1996", "x+", "hamlet+1996", "x+"])
    assert got == ["hamlet+1996", "hamlet+2+1996", "x+", "hamlet+3+1996", "x+2+"]


def test_movielens_items_have_the_stream_ids(ml100k: str) -> None:
    items = read_movielens_items(ml100k)
    assert len(items) == 1_682 == len({it.movie_id for it in items})
    assert [it.ml_id for it in items] == list(range(1, 1_683))
    by_ml = {it.ml_id: it for it in items}
    assert by_ml[1].movie_id == "toy+story+1995"
    assert by_ml[172].movie_id == "the+empire+strikes+back+1980"
    assert by_ml[172].title == "The Empire Strikes Back"
    assert all(is_movie_id(it.movie_id) for it in items)
    assert by_ml[177].movie_id == "the+good_+the+bad+and+the+ugly+1966"  # inner commas stay
    assert by_ml[267].movie_id == "unknown+"  # ML's one untitled row is a movie too
