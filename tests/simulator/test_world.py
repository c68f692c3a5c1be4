"""Users and the hidden taste model: distributions, determinism, truth on disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from services.simulator.world import OCCUPATIONS, GroundTruth, World, WorldConfig


def test_user_documents_follow_the_contract(small_world: World) -> None:
    doc = small_world.user_json(1)
    assert set(doc) == {"user_id", "age", "occupation", "gender"}
    assert doc["user_id"] == 1
    for uid in range(1, 200):
        d = small_world.user_json(uid)
        assert d["occupation"] in OCCUPATIONS
        assert d["gender"] in ("M", "F")
        assert 5 <= d["age"] <= 95


def test_demographics_are_realistic_with_a_little_noise() -> None:
    w = World.build(WorldConfig(seed=3, n_users=60_000, n_movies=100, new_user_capacity=0))
    share_m = float((w.gender == 0).mean())
    assert 0.58 <= share_m <= 0.66
    students = OCCUPATIONS.index("college/grad student")
    assert 0.11 <= float((w.occupation == students).mean()) <= 0.14
    k12 = (w.occupation == OCCUPATIONS.index("K-12 student")) & ~w.noisy
    assert w.age[k12].max() < 18
    retired = (w.occupation == OCCUPATIONS.index("retired")) & ~w.noisy
    assert w.age[retired].min() >= 55
    assert 0.008 <= float(w.noisy.mean()) <= 0.012  # deliberate noise, about 1%
    assert abs(float(w.activity.mean()) - 1.0) < 1e-3
    assert 30 <= float(w.age.mean()) <= 40


def test_utility_is_standardised_and_top_k_is_the_argmax(small_world: World) -> None:
    rng = np.random.default_rng(0)
    u = rng.integers(0, small_world.n_users, 20_000)
    m = rng.integers(0, len(small_world.catalog), 20_000)
    z = small_world.utility(u, m)
    assert abs(float(z.mean())) < 0.05
    assert 0.9 < float(z.std()) < 1.1
    s = small_world.scores(42)
    top = small_world.true_top_k(42, 20)
    idx = [small_world.catalog.index[t] for t in top]
    assert np.all(np.diff(s[idx]) <= 0)
    assert s[idx[-1]] >= np.sort(s)[-20]
    batch = small_world.true_top_k_batch(np.array([42, 7]), 20)
    assert [small_world.catalog.ids[i] for i in batch[0]] == top


def test_demographics_shape_taste(small_world: World) -> None:
    # Genre affinity columns: children like Animation more than people over 50 do.
    from services.simulator.catalog import GENRES
    from services.simulator.world import N_LATENT

    anim = N_LATENT + [n for _, n in GENRES].index("Animation")
    aff = small_world.user_factors[:, anim]
    young, old = small_world.age < 18, small_world.age >= 50
    assert aff[young].mean() > aff[old].mean() + 0.3


def test_same_seed_same_world_other_seed_other_world() -> None:
    cfg = WorldConfig(seed=11, n_users=500, n_movies=300, new_user_capacity=10)
    a, b = World.build(cfg), World.build(cfg)
    assert a.catalog.ids == b.catalog.ids
    assert np.array_equal(a.user_factors, b.user_factors)
    c = World.build(WorldConfig(seed=12, n_users=500, n_movies=300, new_user_capacity=10))
    assert c.catalog.ids != a.catalog.ids


def test_truth_round_trips_without_pickle(small_world: World, tmp_path: Path) -> None:
    folder = small_world.save_truth(tmp_path / "truth")
    for f in folder.glob("*.npy"):
        np.load(f, allow_pickle=False)  # raises if anything needed pickle
    truth = GroundTruth.load(folder)
    for uid in (1, 99, 3_999):
        assert truth.true_top_k(uid, 20) == small_world.true_top_k(uid, 20)
    best = truth.true_top_k(5, 1)[0]
    assert truth.utility(5, best) == max(truth.scores(5))


def test_drift_changes_taste_only_after_its_time(tmp_path: Path) -> None:
    w = World.build(WorldConfig(seed=5, n_users=2_000, n_movies=500, new_user_capacity=0))
    w.set_drift(at_ns=1_000, fraction=0.5, strength=1.0, seed=1)
    drifted = int(np.flatnonzero(w.drift_slot >= 0)[0]) + 1
    steady = int(np.flatnonzero(w.drift_slot < 0)[0]) + 1
    assert w.true_top_k(drifted, 20, t_ns=0) != w.true_top_k(drifted, 20, t_ns=2_000)
    assert w.true_top_k(steady, 20, t_ns=0) == w.true_top_k(steady, 20, t_ns=2_000)
    w.save_truth(tmp_path)
    assert drifted in np.load(tmp_path / "drift_users.npy")
