"""The catalog: slugs with the stream's quirks, unique ids, TMDB-shaped metadata."""

from __future__ import annotations

import numpy as np
import pytest

from services.common.events import is_movie_id
from services.simulator.catalog import GENRES, build_catalog
from services.simulator.world import World


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


def test_a_movielens_catalog_alone_is_ml100k_with_the_trainers_ids(ml100k: str) -> None:
    from services.simulator.app import world_config
    from services.simulator.settings import SimulatorSettings
    from services.trainer.movielens import load_tables  # the test may span services; code not

    settings = SimulatorSettings(catalog=f"movielens:{ml100k}", n_users=100)
    cfg = world_config(settings)
    cat = build_catalog(cfg.n_movies, np.random.default_rng(0), cfg.catalog)
    tables, _ = load_tables(ml100k)
    served = tables["movies"]["movie_id"].to_pylist()
    assert len(cat) == 1_682
    assert cat.ids == served, "the simulator's ids are the ids the trainer serves"
    assert "the+empire+strikes+back+1980" in cat.index
