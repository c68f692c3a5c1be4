"""Demo-world lift: does the best model beat popularity offline and online, and by how much?

The demo's world (``scripts.stack.World``, the one ``make demo`` runs: its users, movies, days
of history, new accounts a day and seed) is backfilled in-process with the demo's settings
(20 % of sessions shown builtin popularity), turned into the tables ingest would snapshot,
split in time and trained on by the trainer's families (``params.yaml``'s parameters, with
``OVERRIDES`` on top).  Offline: NDCG@20 on the validation period of models fitted to the
training period, and on the test period, touched once, of refits to training + validation (the
protocol of the trainer's study), next to the oracle's lists (true taste, minus what the user
saw).  Online: the backfilled engine is copied
once per arm and each copy continues for ``online_hours`` (as long as the demo's truth run)
with every session asking the arm (the refit on all periods, served through ``Scorer`` exactly
as the recommender does, cold users by their demographic segment); same seed, same users, same
clock, so arms differ only in their lists.  The 15-minute watch rate (``services.common.online``)
is compared per user with a one-sided paired t-test, and the share of the popularity -> oracle
gap each arm closes is reported.
"""

from __future__ import annotations

import copy
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

ROOT = Path(__file__).resolve().parents[1]
START = "2026-03-02T00:00:00"
GRAIN_NS = 3_600 * 1_000_000_000
K = 20
OVERRIDES: dict[str, dict[str, Any]] = {}
"""Per-family parameters on top of ``params.yaml`` (what this benchmark found for the demo)."""


class ScorerArm:
    """Serves a fitted model to the engine as the recommender would (known / cold users)."""

    def __init__(self, scorer: Any, world: Any, name: str) -> None:
        from services.common.scoring import segment_key
        from services.simulator.world import GENDERS

        self.scorer = scorer
        self.host = f"{name}:8082"
        self.index = world.catalog.index
        self._segment = lambda u: segment_key(
            GENDERS[int(world.gender[u - 1])], int(world.age[u - 1])
        )
        self.rng = np.random.default_rng(0)

    def recommend(self, user_ids: npt.NDArray[np.int64], t_ns: int) -> list[Any]:
        """One list per user, as ``RecommendationService.recommend`` picks it."""
        from services.simulator.recommenders import RecoAnswer

        out = []
        ms_all = self.rng.integers(5, 30, len(user_ids)).tolist()
        for u, ms in zip(user_ids.tolist(), ms_all, strict=True):
            known = self.scorer.user_index(u) is not None
            ids, _ = self.scorer.recommend(u, K, segment=None if known else self._segment(u))
            ids = list(dict.fromkeys(ids))[:K]
            out.append(RecoAnswer(200, tuple(self.index[m] for m in ids), tuple(ids), None, ms))
        return out


class PartialOracle:
    """The oracle knowing only part of each user's taste: where the online gap comes from.

    ``demographic``: movie bias plus the mean genre affinity of the user's age bucket and
    gender (what the user API could teach at best); ``genre``: movie bias plus the user's own
    genre affinity, without the latent factors.  Finished movies are left out, as the oracle
    does.
    """

    def __init__(self, world: Any, knows: str) -> None:
        from services.simulator.world import AGE_EDGES, N_LATENT

        self.world, self.host, self.memory = world, f"oracle-{knows}:8082", None
        f = np.zeros_like(world.user_factors)
        f[:, -1] = 1.0
        aff = world.user_factors[:, N_LATENT:-1]
        if knows == "genre":
            f[:, N_LATENT:-1] = aff
        else:
            cell = np.searchsorted(np.array(AGE_EDGES), world.age, side="right") * 2 + world.gender
            for c in np.unique(cell):
                f[cell == c, N_LATENT:-1] = aff[cell == c].mean(axis=0)
        self.factors = f
        self.rng = np.random.default_rng(0)

    def recommend(self, user_ids: npt.NDArray[np.int64], t_ns: int) -> list[Any]:
        """Top-k by the partial taste."""
        from services.simulator.recommenders import RecoAnswer

        s = self.factors[user_ids - 1] @ self.world.movie_factors.T
        if self.memory is not None:
            done = self.memory.movies[user_ids - 1]
            r, c = np.nonzero(done >= 0)
            s[r, done[r, c]] = -np.inf
        top = np.argsort(-s, axis=1)[:, :K]
        ids = self.world.catalog.ids
        ms = self.rng.integers(5, 30, len(user_ids)).tolist()
        return [
            RecoAnswer(200, tuple(row), tuple(ids[m] for m in row), None, t)
            for row, t in zip(top.tolist(), ms, strict=True)
        ]


class OracleScorer:
    """The oracle's lists through the ``Scorer`` interface the offline ranking metrics use."""

    family = "oracle"

    def __init__(self, world: Any, data: Any) -> None:
        self.world = world
        self.item_ids = data.item_ids
        self.n_items = len(data.item_ids)
        self._col = np.array([world.catalog.index[str(m)] for m in data.item_ids])
        self._row = {int(u): n for n, u in enumerate(data.user_ids)}
        self.seen = data.seen_matrix("train")

    def recommend(
        self, user_id: int, k: int = K, exclude_seen: bool = True, segment: str | None = None
    ) -> tuple[list[str], bool]:
        """True top-k of the movies the user did not watch in training."""
        s = self.world.scores(user_id)[self._col]
        r = self._row.get(user_id)
        if r is not None and exclude_seen:
            s[self.seen.indices[self.seen.indptr[r] : self.seen.indptr[r + 1]]] = -np.inf
        top = np.argsort(-s, kind="stable")[:k]
        return [str(self.item_ids[i]) for i in top], True


def backfill(
    n_users: int, n_movies: int, days: float, new_accounts_per_day: float, seed: int = 42
) -> tuple[Any, dict[str, pa.Table], int]:
    """The demo's backfill in-process: (engine after it, snapshot tables, its end)."""
    from services.simulator.engine import CREATE, NS, RATE, WATCH, Engine, EngineConfig
    from services.simulator.engine import parse_start as sim_start
    from services.simulator.recommenders import PopularityRecommender
    from services.simulator.world import GENDERS, OCCUPATIONS, World, WorldConfig

    world = World.build(WorldConfig(seed=seed, n_users=n_users, n_movies=n_movies))
    cfg = EngineConfig(
        seed=seed,
        start_ns=sim_start(START),
        reco_share=0.2,
        new_accounts_per_day=new_accounts_per_day,
    )
    engine = Engine(world, cfg, PopularityRecommender(world, seed=47))
    until = cfg.start_ns + int(days * 86_400 * NS)
    parts: list[tuple[npt.NDArray[Any], ...]] = []
    while engine.now_ns < until:
        ev = engine.step_arrays()
        keep = (ev.kind != CREATE) & (ev.time_ns < until)
        parts.append(
            (ev.time_ns[keep], ev.user[keep], ev.kind[keep], ev.movie[keep], ev.value[keep])
        )
    t, u, kind, m, v = (np.concatenate([p[i] for p in parts]) for i in range(5))
    ids = np.array(world.catalog.ids)
    w = kind == WATCH
    raw = pa.table(
        {
            "user_id": u[w],
            "movie": m[w],
            "bucket": t[w] // GRAIN_NS,
            "time_ns": t[w],
            "minute": v[w],
        }
    )
    g = raw.group_by(["user_id", "movie", "bucket"]).aggregate(
        [("time_ns", "min"), ("minute", "max"), ("minute", "count_distinct")]
    )
    interactions = pa.table(
        {
            "user_id": g["user_id"],
            "movie_id": pa.array(ids[g["movie"].to_numpy()]),
            "time_ns": g["time_ns_min"],
            "minutes": pc.cast(g["minute_count_distinct"], pa.int32()),
            "max_minute": pc.cast(g["minute_max"], pa.int32()),
        }
    )
    r = kind == RATE
    ratings = pa.table(
        {
            "user_id": u[r],
            "movie_id": pa.array(ids[m[r]]),
            "rating": v[r].astype(np.int8),
            "time_ns": t[r],
        }
    )
    users = np.unique(u)
    users_t = pa.table(
        {
            "user_id": users,
            "age": world.age[users - 1].astype(np.int16),
            "gender": [GENDERS[x] for x in world.gender[users - 1].tolist()],
            "occupation": [OCCUPATIONS[x] for x in world.occupation[users - 1].tolist()],
        }
    )
    movies = movies_table(world.catalog)
    tables = {"interactions": interactions, "ratings": ratings, "users": users_t, "movies": movies}
    return engine, tables, until


class CatalogRecords:
    """The movie API's documents straight from the catalog, as ingest's metadata cache serves."""

    def __init__(self, catalog: Any) -> None:
        self.catalog = catalog

    def get_many(self, entity: str, ids: Any) -> dict[str, dict[str, Any] | None]:
        """The movie documents of ``ids`` (``entity`` is always "movie" here)."""
        return {m: self.catalog.to_json(self.catalog.index[m]) for m in ids}


def movies_table(catalog: Any) -> pa.Table:
    """The snapshot's ``movies`` table as ingest builds it from the movie API (genres, votes)."""
    from services.ingest.derived import movies_table as build

    return build(catalog.ids, CatalogRecords(catalog))  # type: ignore[arg-type]


def online(engine: Any, arm: Any, hours: float) -> Any:
    """Continue a copy of ``engine`` for ``hours`` with every session asking ``arm``."""
    from services.common import online as onl
    from services.simulator.engine import NS, WATCH
    from services.simulator.recommenders import OracleRecommender

    eng = copy.deepcopy(engine)
    eng.recommender = arm
    eng.cfg.reco_share = 1.0
    if isinstance(arm, OracleRecommender | PartialOracle):
        arm.memory = eng.memory
    start = eng.now_ns
    until = start + int(hours * 3600 * NS)
    recos, wt, wu, wm = [], [], [], []
    while eng.now_ns < until:
        ev = eng.step_arrays()
        recos.extend(ev.recos)
        w = ev.kind == WATCH
        wt.append(ev.time_ns[w])
        wu.append(ev.user[w])
        wm.append(ev.movie[w])
    ids = np.array(eng.world.catalog.ids)
    lists = pa.table(
        {
            "time_ns": pa.array([e.time_ns for e in recos], pa.int64()),
            "user_id": pa.array([e.user_id for e in recos], pa.int64()),
            "status": pa.array([e.status for e in recos], pa.int16()),
            "result": pa.array([list(e.result) for e in recos], pa.list_(pa.string())),
        }
    )
    watches = pa.table(
        {
            "time_ns": np.concatenate(wt),
            "user_id": np.concatenate(wu),
            "movie_id": pa.array(ids[np.concatenate(wm)]),
        }
    )
    judged = onl.outcomes(lists, watches, until_ns=until)
    return judged, eng.stats


def paired(a: Any, b: Any) -> dict[str, Any]:
    """Per-user watch rates of arm ``a`` against ``b`` over users decided in both."""
    from scipy import stats

    from services.common import online as onl

    ua, ub = onl.per_user(a).table, onl.per_user(b).table
    common, ia, ib = np.intersect1d(
        ua["user_id"].to_numpy(), ub["user_id"].to_numpy(), return_indices=True
    )
    diff = ua["rate"].to_numpy()[ia] - ub["rate"].to_numpy()[ib]
    t = stats.ttest_1samp(diff, 0.0, alternative="greater")
    return {
        "users": len(common),
        "mean_per_user_difference": round(float(diff.mean()), 4),
        "t": round(float(t.statistic), 2),
        "p_one_sided": float(t.pvalue),
    }


def default_world(quick: bool) -> tuple[int, int, float, float]:
    """(users, movies, days, online hours): the demo's world, served as long as its truth run.

    ``quick`` keeps the demo's users and catalog with one week of history and half the hours.
    """
    from scripts.stack import TRUTH_HOURS, World

    demo = World()
    if quick:
        return demo.users, demo.movies, 7, TRUTH_HOURS / 2
    return demo.users, demo.movies, demo.days, TRUTH_HOURS


def run(
    quick: bool,
    world: tuple[int, int, float, float] | None = None,
    new_accounts_per_day: float | None = None,
) -> dict[str, Any]:
    """Backfill, train, evaluate offline and online; the lift of each family over popularity.

    The default world is the demo's (``scripts.stack.World``), served online as long as the
    demo's truth run serves each arm (``scripts.stack.TRUTH_HOURS``); ``quick`` keeps its users
    and catalog with one week of history.  ``world``: (users, movies,
    backfill days, online hours) instead, e.g. ``--world 6000,2000,14,3``;
    ``new_accounts_per_day`` defaults to the demo world's.
    """
    from scripts.stack import World
    from services.common.runtime import pin_blas_threads

    pin_blas_threads()
    from services.common import online as onl
    from services.simulator.recommenders import OracleRecommender, PopularityRecommender
    from services.trainer import data as td
    from services.trainer.evaluate import ranking_metrics
    from services.trainer.models import FAMILIES
    from services.trainer.pipeline import load_params

    demo = World()
    n_users, n_movies, days, hours = world or default_world(quick)
    new_accounts = (
        demo.new_accounts_per_day if new_accounts_per_day is None else new_accounts_per_day
    )
    params = load_params(ROOT / "params.yaml")
    families = [f for f in params["families"] if f != "svd"]  # svd: slow, never the best here
    out: dict[str, Any] = {
        "world": {
            "users": n_users,
            "movies": n_movies,
            "days": days,
            "seed": demo.seed,
            "new_accounts_per_day": new_accounts,
            "is_demo_world": (n_users, n_movies, days, new_accounts)
            == (demo.users, demo.movies, demo.days, demo.new_accounts_per_day),
        },
        "online_hours": hours,
        "overrides": OVERRIDES,
    }
    t0 = time.perf_counter()
    engine, tables, until = backfill(n_users, n_movies, days, new_accounts, demo.seed)
    out["backfill_seconds"] = round(time.perf_counter() - t0, 1)
    out["snapshot_rows"] = {k: v.num_rows for k, v in tables.items()}
    provenance = {"source": "bench_lift", "until_ns": until, "watch_grain_ns": GRAIN_NS}
    data = td.prepare(tables, provenance, 0.1, 0.1)
    # validation scores fits to the training period; test, touched once, refits to training +
    # validation (the protocol of the trainer's study); online serves refits to every period
    held_out = {"val": data, "test": data.with_validation_in_train()}
    refit_data = data.all_periods()
    offline: dict[str, Any] = {}
    scorers: dict[str, Any] = {}
    for fam in families:
        t0 = time.perf_counter()
        p = {**(params["models"].get(fam) or {}), **OVERRIDES.get(fam, {})}
        row: dict[str, Any] = {}
        for period, fit_data in held_out.items():
            fitted = FAMILIES[fam](p, seed=42).fit(fit_data)
            if period == "val":
                row["train_seconds"] = round(time.perf_counter() - t0, 1)
            m = ranking_metrics(fitted.scorer, fit_data, period, K, 5000, 42)
            row[period] = {
                "ndcg@20": m["ndcg@20"],
                "ndcg@20_with_history": m["ndcg@20_with_history"],
                "ndcg@20_cold": m["ndcg@20_cold"],
            }
        offline[fam] = row
        scorers[fam] = FAMILIES[fam](p, seed=42).fit(refit_data).scorer
        print(f"{fam}: {row}", file=sys.stderr, flush=True)
    offline["oracle"] = {
        period: {
            "ndcg@20": ranking_metrics(
                OracleScorer(engine.world, fit_data), fit_data, period, K, 5000, 42
            )["ndcg@20"]
        }
        for period, fit_data in held_out.items()
    }
    pop_val = offline["popularity"]["val"]["ndcg@20"]
    best = max(
        (f for f in families if f != "popularity"), key=lambda f: offline[f]["val"]["ndcg@20"]
    )
    out["offline"] = offline
    out["best_on_validation"] = best
    for period in ("val", "test"):
        pop = offline["popularity"][period]["ndcg@20"]
        orc = offline["oracle"][period]["ndcg@20"]
        for f in [*families]:
            v = offline[f][period]["ndcg@20"]
            offline[f][period]["x_popularity"] = round(v / pop, 3) if pop else None
            offline[f][period]["oracle_gap_closed"] = (
                round((v - pop) / (orc - pop), 3) if orc != pop else None
            )
    del pop_val

    sim_world = engine.world
    arms: dict[str, Any] = {
        "oracle": OracleRecommender(sim_world, seed=47),
        "oracle_genre_affinity_only": PartialOracle(sim_world, "genre"),
        "oracle_demographics_only": PartialOracle(sim_world, "demographic"),
        "builtin_popularity": PopularityRecommender(sim_world, seed=47),
        **{f: ScorerArm(scorers[f], sim_world, f) for f in families},
    }
    judged: dict[str, Any] = {}
    online_rows: dict[str, Any] = {}
    for name, arm in arms.items():
        t0 = time.perf_counter()
        judged[name], st = online(engine, arm, hours)
        wr = onl.summarize(judged[name])
        online_rows[name] = {
            "watch_rate_15_min": round(wr.rate, 4),
            "lists_decided": wr.trials,
            "accepted_share": round(st["reco_accepted"] / max(st["reco_calls"], 1), 4),
            "seconds": round(time.perf_counter() - t0, 1),
        }
        print(f"{name}: {online_rows[name]}", file=sys.stderr, flush=True)
    pop_rate = online_rows["popularity"]["watch_rate_15_min"]
    orc_rate = online_rows["oracle"]["watch_rate_15_min"]
    for name in arms:
        if name in ("oracle", "popularity"):
            continue
        r = online_rows[name]
        r["points_over_popularity"] = round(100 * (r["watch_rate_15_min"] - pop_rate), 2)
        r["oracle_gap_closed"] = round(
            (r["watch_rate_15_min"] - pop_rate) / (orc_rate - pop_rate), 3
        )
        r["paired_vs_popularity"] = paired(judged[name], judged["popularity"])
    out["online"] = online_rows
    b_off = offline[best]
    b_on = online_rows[best]
    out["goals"] = {
        "served": best,
        "offline_test_ndcg_x_popularity": b_off["test"]["x_popularity"],
        "offline_at_least_1_3x": (b_off["test"]["x_popularity"] or 0) >= 1.3,
        "online_points_over_popularity": b_on["points_over_popularity"],
        "online_p_one_sided": b_on["paired_vs_popularity"]["p_one_sided"],
        "online_oracle_gap_closed": b_on["oracle_gap_closed"],
        "online_goal_met": b_on["points_over_popularity"] >= 5
        and b_on["paired_vs_popularity"]["p_one_sided"] < 0.01
        and b_on["oracle_gap_closed"] >= 0.4,
    }
    return out


if __name__ == "__main__":
    import argparse

    # Run as a file (``python benchmarks/bench_lift.py``): the demo's world lives in ``scripts``.
    sys.path.insert(0, str(ROOT))

    def world_dims(text: str) -> tuple[int, int, float, float]:
        try:
            u, m, d, h = text.split(",")
            dims = (int(u), int(m), float(d), float(h))
        except ValueError:
            raise argparse.ArgumentTypeError(f"not USERS,MOVIES,DAYS,HOURS: {text!r}") from None
        if min(dims) <= 0:
            raise argparse.ArgumentTypeError(f"every size must be positive: {text!r}")
        return dims

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="the demo's world with 7 days")
    ap.add_argument(
        "--world", type=world_dims, help="USERS,MOVIES,DAYS,HOURS instead of the demo's world"
    )
    ap.add_argument(
        "--new-accounts-per-day",
        type=float,
        help="new accounts a simulated day (default: the demo world's; the simulator's own"
        " default, 2,000, was used by the --world measurements before the demo world had weeks)",
    )
    args = ap.parse_args()
    result = run(quick=args.quick, world=args.world, new_accounts_per_day=args.new_accounts_per_day)
    print(json.dumps(result, indent=2))
