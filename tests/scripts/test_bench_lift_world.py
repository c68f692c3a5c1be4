"""``python -m benchmarks.run lift`` measures the world ``make demo`` runs, not a copy of it."""

from __future__ import annotations

from benchmarks.bench_lift import default_world
from scripts.stack import DEFAULT_POLICY, TRUTH_HOURS, World


def test_the_lift_benchmark_defaults_to_the_demo_world_and_its_truth_hours() -> None:
    w = World()
    assert default_world(quick=False) == (w.users, w.movies, w.days, TRUTH_HOURS)
    users, movies, days, _ = default_world(quick=True)
    assert (users, movies) == (w.users, w.movies) and days < w.days


def test_the_demo_world_has_weeks_of_history_and_few_new_accounts() -> None:
    w = World()
    assert w.days >= 14  # a world of a few days is a cold-start world: nothing to personalize
    assert w.new_accounts_per_day <= 0.05 * w.users  # new accounts must not swamp the users
    assert w.stream_flags() == ["--new-accounts-per-day", f"{w.new_accounts_per_day:g}"]


def test_the_experiment_plans_for_no_more_users_per_arm_than_the_world_has() -> None:
    assert DEFAULT_POLICY["min_users"] <= DEFAULT_POLICY["max_users"] <= World().users // 2


def test_the_lift_benchmark_gives_the_trainer_the_movie_api_as_ingest_does() -> None:
    import numpy as np

    from benchmarks.bench_lift import movies_table
    from services.ingest.derived import SNAPSHOT_SCHEMAS
    from services.simulator.world import World as SimWorld
    from services.simulator.world import WorldConfig
    from services.trainer import data as td

    catalog = SimWorld.build(WorldConfig(seed=3, n_users=50, n_movies=40)).catalog
    table = movies_table(catalog)
    assert table.schema == SNAPSHOT_SCHEMAS["movies"]
    ids = np.array(sorted(catalog.ids), dtype=str)
    year, genres, _ = td._movie_features(table, ids)
    meta = td._movie_meta(table, ids)
    assert meta is not None and genres.sum() > 0 and (year > 0).all()
    at = np.array([catalog.index[m] for m in ids])
    np.testing.assert_allclose(meta[:, 3], catalog.runtime[at])
    rated = catalog.vote_count[at] > 0
    np.testing.assert_allclose(meta[rated, 0], catalog.vote_average[at][rated], atol=0.05)
