"""The honest protocol: tuning reads validation only, CIs, breakdowns, the train+val refit."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from services.trainer import data as td
from services.trainer import study
from services.trainer.evaluate import (
    HISTORY_BUCKETS,
    bootstrap_ci,
    history_lengths,
    paired_ratio_ci,
    ranking_metrics,
)
from services.trainer.models import FAMILIES


def test_grid_is_every_combination_in_a_fixed_order() -> None:
    g = study.grid({"b": [1, 2], "a": ["x", "y", "z"]})
    assert len(g) == 6 and g[0] == {"a": "x", "b": 1} and g[-1] == {"a": "z", "b": 2}


def test_tuning_never_reads_the_test_period(
    prepared: td.Prepared, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = study.tune("popularity", prepared, 10, seed=1, n_trials=4)
    # scramble the test period: the tuning result must not move
    test = prepared.periods["test"]
    rng = np.random.default_rng(0)
    scrambled = dataclasses.replace(test, inter_item=rng.permutation(test.inter_item))
    other = dataclasses.replace(prepared, periods={**prepared.periods, "test": scrambled})
    again = study.tune("popularity", other, 10, seed=1, n_trials=4)
    # seeded and sequential: the same trials, in the same order, whatever the test period holds
    assert again == first
    assert len(first["trials"]) == 4
    assert first["trials"][0]["params"] == study.START["popularity"]  # the search starts there
    assert first["best"] in [t["params"] for t in first["trials"]]
    best = max(t["val"]["ndcg@10"] for t in first["trials"])
    assert first["val"]["ndcg@10"] == best
    other_seed = study.tune("popularity", prepared, 10, seed=2, n_trials=4)
    assert [t["params"] for t in other_seed["trials"][1:]] != [
        t["params"] for t in first["trials"][1:]
    ]


def test_cold_lists_are_tuned_once_and_given_to_every_family(
    prepared: td.Prepared, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(study.TRIALS, "popularity", 2)
    monkeypatch.setitem(study.TRIALS, "ease", 2)
    res = study.temporal_study(prepared, ["popularity", "ease"], 10, seed=0)
    cold = res["cold_tuning"]["best"]
    assert len(res["cold_tuning"]["trials"]) == len(study.grid(study.COLD))
    for family in ("popularity", "ease"):
        assert all(
            {k: t["params"][k] for k in cold} == cold for t in res["tuning"][family]["trials"]
        )
    assert set(res["test"]) == {"popularity", "ease", "popularity_all_time"}


def test_refit_merges_validation_into_train(prepared: td.Prepared) -> None:
    refit = prepared.with_validation_in_train()
    n = prepared.n_items
    assert len(refit.train.inter_user) == len(prepared.train.inter_user) + len(
        prepared.periods["val"].inter_user
    )
    assert refit.periods["test"] is prepared.periods["test"]
    watched = refit.train.inter_user.astype(np.int64) * n + refit.train.inter_item
    test = refit.periods["test"]
    assert len(np.intersect1d(watched, test.inter_user.astype(np.int64) * n + test.inter_item)) == 0


def test_bootstrap_intervals_are_seeded_and_cover_the_mean() -> None:
    v = np.random.default_rng(2).random(300)
    ci = bootstrap_ci(v, seed=3)
    assert ci is not None and ci == bootstrap_ci(v, seed=3)
    assert ci[0] < v.mean() < ci[1] and ci[1] - ci[0] < 0.1
    assert bootstrap_ci(v[:1], seed=3) is None
    r = paired_ratio_ci(v * 1.2, v, seed=3)
    assert r["ratio"] == pytest.approx(1.2) and r["ci95"][0] == pytest.approx(1.2)
    noisy = paired_ratio_ci(v + np.random.default_rng(4).random(300), v, seed=3)
    assert noisy["ci95"][0] < noisy["ratio"] < noisy["ci95"][1]


def test_breakdown_partitions_the_users(prepared: td.Prepared) -> None:
    scorer = FAMILIES["popularity"]({}, seed=0).fit(prepared).scorer
    per_user: dict[str, np.ndarray] = {}
    m = ranking_metrics(scorer, prepared, "test", 10, 0, 0, per_user)
    b = m["breakdown"]
    assert sum(c["users"] for c in b["by_history"].values()) == m["users"]
    assert list(b["by_history"]) == [name for name, _, _ in HISTORY_BUCKETS]
    assert sum(c["users"] for c in b["by_gender"].values()) == m["users"]
    assert sum(c["users"] for c in b["by_age"].values()) == m["users"]
    cold = b["by_history"]["0"]
    assert cold["users"] == m["users"] - m["users_with_history"]
    assert cold["ndcg@10"] == m["ndcg@10_cold"]
    lengths = history_lengths(prepared)[per_user["users"].astype(int)]
    assert b["by_history"][">10"]["users"] == int((lengths > 10).sum())
    assert np.mean(per_user["ndcg"]) == pytest.approx(m["ndcg@10"], abs=1e-5)


def test_report_shows_intervals_and_groups(prepared: td.Prepared) -> None:
    from services.trainer.report import breakdown_lines

    models = {}
    for family in ("popularity", "ease"):
        scorer = FAMILIES[family]({}, seed=0).fit(prepared).scorer
        models[family] = {"test": {"ranking": ranking_metrics(scorer, prepared, "test", 20, 0, 0)}}
    text = "\n".join(breakdown_lines({"models": models}))
    assert "| popularity | [" in text and "| ease | [" in text
    assert "by training history | 0 (n=" in text and "| >10 (n=" in text
    assert "by gender" in text and "by age" in text
