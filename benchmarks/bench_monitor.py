"""The monitor's studies: A/A false positives, power, CUPED, interleaving; lag and recompute.

Experiments are drawn from the simulator in process (``tests.monitor.simab``: the simulator's
world, the router's assignment, builtin arms), evaluated by the monitor's own evaluator, and
tested with its own statistics.

* **A/A**: per world, one run in which everyone gets popularity; each of many salts splits the
  users 50/50 again (a fresh randomization of the same users).  Worlds x salts >= 200 A/A
  experiments.  Fixed-horizon z test at the end; mSPRT looked at after every batch (30 min of
  event time).  Targets: fixed FPR in [0.03, 0.07]; sequential FPR <= 0.05.  The variance the
  plans assume is checked where the truth (no effect) is known: the mean squared difference
  over the binomial variance at each experiment's users (1 when the plan's variance is right).
* **Power**: per world, one run where everyone gets control's model and one where everyone
  gets treatment's (same world, same seed); the worlds' users are pooled (ids made unique per
  world), and each experiment's salt splits the pool with the router's two hashes, taking
  control users from the first runs and treatment users from the second.  The planned effect
  is the simulator's truth for that population (conversion of all pooled users under each
  model); the planned size is ``sample_size_proportions(exact=True)`` (power 0.8 of the pooled
  z test, by its normal approximation and by the exact binomial sum).  As the policy's
  ``max_users`` does, an experiment runs until *both* arms hold the planned users (here: the
  smallest exposure share that gives both arms that many by the end), so the plan is a
  per-arm minimum, not an expectation half the experiments fall short of; also at 1.5x and
  at the always-valid test's plan (``sample_size_sequential``, the same mixture spread and the
  looks at the shares of the final users each batch has seen), where the policy's own test is
  to reach 0.8 (``power_sequential`` with its standard error, and its prediction, per size).
  The pool is many times an experiment, so experiments share few users; 500 experiments give
  power within about +-0.035 (95 %).  The planning is checked: the spread of the observed
  differences against the standard error the plan assumed at the users each experiment had,
  and the power predicted (exactly) at those users.  Effects: oracle vs popularity (large) and
  a 40 % oracle blend vs popularity (smaller); both share the popularity runs.  CUPED's
  variance reduction is measured on the same experiments.
* **Interleaving**: the same users served a team-draft of popularity and the blend; the sign
  test's users needed vs the A/B test's, by subsampling users.
* **Lag**: events committed to a real event store at 1,000 events/s (1 s batches, simulated
  time at 60x), the monitor stepping every 0.5 s; lag = wall time from the commit that closes a
  window to the step that includes it.
* **Recompute**: 10M events in an event store, one evaluation from scratch: time and peak RSS
  (in a child process).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import resource
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from scipy import stats as sps

from services.common.assignment import BUCKETS, bucket
from services.monitor import stats
from services.monitor.evaluation import Evaluator
from services.monitor.sources import LinesSource
from tests.monitor.simab import experiment_config, simulate
from tests.monitor.storeutil import store_table

MIN = 60 * 1_000_000_000
USERS, MOVIES, HOURS, WARMUP = 3000, 400, 8.0, 12.0
STEP_MIN = 30
# Power: worlds this big give a pool of ~6,000 exposed users per world and model.
POWER_USERS = 10_000
WORLD_STRIDE = 10_000_000  # pooled user id = world * stride + the world's own id
POWER_EXPERIMENTS = 500  # power's standard error <= 0.018 at 0.8
RESULTS = Path(__file__).resolve().parent / "results"


def _looks(run: Any, step_min: int = STEP_MIN) -> list[dict[str, np.ndarray]]:
    """Per-user counters after every batch of ``step_min`` minutes of event time."""
    src = LinesSource.from_lines(run.stream + run.exposures)
    ev = Evaluator(src.read, "exp-1")
    out = []
    t = run.start_ns
    while t < run.end_ns:
        t = min(run.end_ns, t + step_min * MIN)
        src.visible_until = t
        ev.advance(t)
        out.append({k: v.copy() for k, v in ev.state.users.items()})
    return out


class _Buckets:
    """The router's two hashes of every user under one salt, computed once per salt."""

    def __init__(self, ids: np.ndarray, salt: str, first: int | None = None) -> None:
        """``first``: hash the arm of only the ``first`` users lowest in exposure (all that an
        experiment of that size reaches; the rest are never exposed), to save time."""
        self.ids = ids  # sorted, unique
        self.exposure = np.array([bucket(salt + ":exposure", int(u)) for u in ids])
        self.arm = np.full(ids.size, -1)
        reach = np.arange(ids.size)
        if first is not None and first < ids.size:
            bound = np.partition(self.exposure, first)[first]
            reach = np.nonzero(self.exposure <= bound)[0]
            self.exposure[self.exposure > bound] = BUCKETS
        self.arm[reach] = [bucket(salt, int(u)) for u in ids[reach]]

    def share_for(self, n: int, control: np.ndarray, treatment: np.ndarray) -> float:
        """The smallest exposure share at which both arms hold ``n`` users by the end: the
        policy's ``max_users`` rule (the smaller arm decides), with exposure for time."""
        ic, it = np.searchsorted(self.ids, control), np.searchsorted(self.ids, treatment)
        ec = np.sort(self.exposure[ic][(self.arm[ic] >= 0) & (self.arm[ic] < BUCKETS // 2)])
        et = np.sort(self.exposure[it][self.arm[it] >= BUCKETS // 2])
        if min(ec.size, et.size) < n:
            raise ValueError(f"too few users hashed for two arms of {n}")
        return (max(int(ec[n - 1]), int(et[n - 1])) + 1) / BUCKETS

    def arms(self, rows: np.ndarray, share: float) -> tuple[np.ndarray, np.ndarray]:
        """(control, treatment) masks of the users at ``rows`` of ``ids`` under ``share``."""
        arm = self.arm[rows]
        exposed = self.exposure[rows] < share * BUCKETS
        return exposed & (arm >= 0) & (arm < BUCKETS // 2), exposed & (arm >= BUCKETS // 2)


def _test(x0: int, n0: int, x1: int, n1: int, tau: float, prev: float) -> tuple[float, ...]:
    """(fixed-horizon p, always-valid p, difference) of conversion, control vs treatment."""
    fixed = stats.two_proportions(x0, n0, x1, n1)
    seq = stats.msprt(fixed.diff, fixed.se**2, tau, previous_p=prev)
    return fixed.p_value, seq.p_value, fixed.diff


def _sel(u: dict[str, np.ndarray], mask: np.ndarray) -> dict[str, np.ndarray]:
    return {k: u[k][mask] for k in ("successes", "watch_minutes", "pre_minutes")}


def _experiments(
    looks_c: list[dict[str, np.ndarray]],
    looks_t: list[dict[str, np.ndarray]],
    salts: list[str],
    shares: list[float],
    tau: float,
    sizes: list[int] | None = None,
) -> list[list[dict[str, Any]]]:
    """Per share (or per size: each salt's smallest share giving both arms that many users by
    the end): fixed and sequential p of each salt's split (control from ``looks_c``, treatment
    from ``looks_t``), plus the difference, per-arm users and CUPED's cut."""
    ids = np.unique(np.concatenate([lk["user_id"] for lk in [*looks_c, *looks_t]]))
    rows = (
        [np.searchsorted(ids, lk["user_id"]) for lk in looks_c],
        [np.searchsorted(ids, lk["user_id"]) for lk in looks_t],
    )
    out: list[list[dict[str, Any]]] = [[] for _ in (sizes or shares)]
    for salt in salts:
        # An arm of n users is reached within the ~2n users lowest in exposure; 6n is ample.
        hashes = _Buckets(ids, salt, 6 * max(sizes) if sizes else None)
        if sizes:
            ends = (looks_c[-1]["user_id"], looks_t[-1]["user_id"])
            shares = [hashes.share_for(n, *ends) for n in sizes]
        for share, results in zip(shares, out, strict=True):
            results.append(_experiment(looks_c, looks_t, rows, hashes, share, tau))
    return out


def _experiment(
    looks_c: list[dict[str, np.ndarray]],
    looks_t: list[dict[str, np.ndarray]],
    rows: tuple[list[np.ndarray], list[np.ndarray]],
    hashes: _Buckets,
    share: float,
    tau: float,
) -> dict[str, Any]:
    """One experiment: its looks, then CUPED's variance cut at the end."""
    seq_p = fixed_p = 1.0
    diff = 0.0
    for lc, lt, rc, rt in zip(looks_c, looks_t, *rows, strict=True):
        mc, mt = hashes.arms(rc, share)[0], hashes.arms(rt, share)[1]
        n0, n1 = int(mc.sum()), int(mt.sum())
        if n0 < 2 or n1 < 2:
            continue
        x0, x1 = int((lc["successes"][mc] > 0).sum()), int((lt["successes"][mt] > 0).sum())
        fixed_p, seq_p, diff = _test(x0, n0, x1, n1, tau, seq_p)
    c, t = _sel(looks_c[-1], mc), _sel(looks_t[-1], mt)
    cut: dict[str, float] = {}
    for metric in ("conversion", "watch_minutes"):
        y0 = (
            (c["successes"] > 0).astype(float)
            if metric == "conversion"
            else c["watch_minutes"].astype(float)
        )
        y1 = (
            (t["successes"] > 0).astype(float)
            if metric == "conversion"
            else t["watch_minutes"].astype(float)
        )
        x = np.concatenate([c["pre_minutes"], t["pre_minutes"]]).astype(float)
        theta = stats.cuped_theta(np.concatenate([y0, y1]), x)
        a0 = stats.cuped_adjust(y0, c["pre_minutes"], theta, float(x.mean()))
        a1 = stats.cuped_adjust(y1, t["pre_minutes"], theta, float(x.mean()))
        raw = y0.var(ddof=1) / y0.size + y1.var(ddof=1) / y1.size
        adj = a0.var(ddof=1) / a0.size + a1.var(ddof=1) / a1.size
        cut[metric] = float(1 - adj / raw) if raw > 0 else 0.0
    return {
        "fixed_p": fixed_p,
        "sequential_p": seq_p,
        "diff": diff,
        "users": (int(mc.sum()), int(mt.sum())),
        "converted": (int((c["successes"] > 0).sum()), int((t["successes"] > 0).sum())),
        "cuped_cut": cut,
    }


def _run(targets: dict[str, str], seed: int, users: int = USERS) -> Any:
    cfg = experiment_config({"control": 50, "treatment": 50}, salt=f"sim{seed}")
    return simulate(
        cfg,
        targets,
        users=users,
        movies=MOVIES,
        hours=HOURS,
        seed=seed,
        warmup_hours=WARMUP,
        world_seed=seed,
    )


def aa_study(worlds: int, salts: int) -> dict[str, Any]:
    """False-positive rates over worlds x salts A/A experiments."""
    res: list[dict[str, Any]] = []
    for w in range(worlds):
        looks = _looks(_run({"control": "popularity", "treatment": "popularity"}, 100 + w))
        res += _experiments(looks, looks, [f"aa-{w}-{s}" for s in range(salts)], [1.0], 0.05)[0]
    fixed = np.array([r["fixed_p"] for r in res])
    seq = np.array([r["sequential_p"] for r in res])
    n = len(res)
    fpr_fixed = float((fixed < 0.05).mean())
    fpr_seq = float((seq < 0.05).mean())
    half = 1.96 * np.sqrt(0.05 * 0.95 / n)
    # The planning's variance checked where the truth is known (no effect): the squared
    # differences over the binomial variance the plan assumes, at each experiment's users.
    users = np.array([r["users"] for r in res], dtype=float)
    conv = np.array([r["converted"] for r in res], dtype=float)
    rate = conv.sum(axis=1) / users.sum(axis=1)
    var = rate * (1 - rate) * (1 / users[:, 0] + 1 / users[:, 1])
    inflation = float(np.mean(np.array([r["diff"] for r in res]) ** 2 / var))
    return {
        "experiments": n,
        "worlds": worlds,
        "salts_per_world": salts,
        "looks_per_experiment": int(HOURS * 60 / STEP_MIN),
        "users_per_arm_mean": float(np.mean([r["users"] for r in res])),
        "fpr_fixed": fpr_fixed,
        "fpr_sequential_every_look": fpr_seq,
        "alpha": 0.05,
        "binomial_95_band_at_alpha": [0.05 - half, 0.05 + half],
        "fixed_in_0.03_0.07": 0.03 <= fpr_fixed <= 0.07,
        "variance_inflation": inflation,
        "variance_inflation_95": [
            float(n * inflation / sps.chi2.ppf(0.975, n)),
            float(n * inflation / sps.chi2.ppf(0.025, n)),
        ],
        "sequential_le_0.05": fpr_seq <= 0.05,
    }


_POOLS: dict[tuple[str, int], list[dict[str, np.ndarray]]] = {}


def _pool(model: str, worlds: int) -> list[dict[str, np.ndarray]]:
    """Per look, the counters of every user of ``worlds`` worlds all served ``model``, pooled
    (ids made unique per world); cached, so both power studies share the popularity runs."""
    key = (model, worlds)
    if key not in _POOLS:
        per_world = [
            _looks(_run({"control": model, "treatment": model}, 200 + w, users=POWER_USERS))
            for w in range(worlds)
        ]
        pooled = []
        for i in range(min(len(lk) for lk in per_world)):
            parts = [{**lk[i], "user_id": lk[i]["user_id"] + w * WORLD_STRIDE}
                     for w, lk in enumerate(per_world)]  # fmt: skip
            pooled.append({k: np.concatenate([pt[k] for pt in parts]) for k in parts[0]})
        _POOLS[key] = pooled
    return _POOLS[key]


def power_study(name: str, treatment: str, worlds: int, experiments: int) -> dict[str, Any]:
    """Power of fixed and sequential tests at the planned sample size, the planning checked,
    and CUPED's cut.

    The planned effect is the simulator's truth for the study's population: the conversion
    difference over all pooled users, each served by one model throughout.  Each experiment
    runs, as the policy's ``max_users`` does, until *both* arms hold the planned users.
    """
    looks_c, looks_t = _pool("popularity", worlds), _pool(treatment, worlds)
    p0 = float(np.mean(looks_c[-1]["successes"] > 0))
    p1 = float(np.mean(looks_t[-1]["successes"] > 0))
    # Planned for the test that is run: the pooled z test (statsmodels' formula, checked exactly).
    planned = stats.sample_size_proportions(p0, p1, exact=True)
    pool = min(looks_c[-1]["user_id"].size, looks_t[-1]["user_id"].size)
    tau = max(abs(p1 - p0), 0.01)
    # The always-valid test's plan, for its looks: the share of the final users seen by each.
    seen = np.array(
        [lc["user_id"].size + lt["user_id"].size for lc, lt in zip(looks_c, looks_t, strict=True)]
    )
    fractions = [float(f) for f in np.unique(seen[seen > 0] / seen[-1])]
    seq_planned = stats.sample_size_sequential(p0, p1, tau, looks=fractions)
    labels = ("1x", "1.5x", "seq_plan")
    sizes = [planned, round(planned * 1.5), seq_planned]
    if 4 * max(sizes) > pool:
        raise ValueError(f"{pool} pooled users are too few for two arms of {max(sizes)}")
    out: dict[str, Any] = {
        "control": "popularity",
        "treatment": treatment,
        "worlds": worlds,
        "users_per_world": POWER_USERS,
        "pooled_users_per_model": pool,
        "true_conversion": [p0, p1],
        "planned_effect": p1 - p0,
        "planned_users_per_arm": planned,
        "predicted_power": stats.power_proportions(p0, p1, planned),
        "predicted_power_exact": stats.power_proportions_exact(p0, p1, planned, planned),
        "sequential_plan": {
            "method": "sample_size_sequential (Monte Carlo of the mSPRT's path, 20,000 paths,"
            " seed 0) at the looks' shares of the final users",
            "mixture_sd": tau,
            "look_fractions": fractions,
            "users_per_arm": seq_planned,
            "over_fixed_plan": seq_planned / planned,
            "predicted_power": stats.power_sequential(p0, p1, seq_planned, tau, looks=fractions),
        },
        "by_size": {},
    }
    salts = [f"pw-{name}-{s}" for s in range(experiments)]
    per_size = _experiments(looks_c, looks_t, salts, [], tau, sizes)
    for label, n, res in zip(labels, sizes, per_size, strict=True):
        fixed = np.array([r["fixed_p"] for r in res])
        seq = np.array([r["sequential_p"] for r in res])
        diffs = np.array([r["diff"] for r in res])
        users = np.array([r["users"] for r in res], dtype=int)
        power = float((fixed < 0.05).mean())
        power_seq = float((seq < 0.05).mean())
        # What the plan predicts for the arms the experiments really had (both >= n): the
        # exact binomial power of the z test, and the difference's variance, per experiment.
        exact = [stats.power_proportions_exact(p0, p1, int(a), int(b)) for a, b in users]
        var = p0 * (1 - p0) / users[:, 0] + p1 * (1 - p1) / users[:, 1]
        planned_se = float(np.sqrt(var.mean()))
        sd = float(diffs.std(ddof=1))
        out["by_size"][label] = {
            "users_per_arm": n,
            "users_per_arm_mean": users.mean(axis=0).tolist(),
            "smaller_arm_mean": float(users.min(axis=1).mean()),
            "larger_arm_mean": float(users.max(axis=1).mean()),
            "smaller_arm_min": int(users.min()),
            "share_of_pool_per_experiment": float(users.sum(axis=1).mean() / pool),
            "experiments": len(res),
            "power_fixed": power,
            "power_fixed_se": float(np.sqrt(power * (1 - power) / len(res))),
            "predicted_power_at_users": float(np.mean(exact)),
            "power_fixed_ge_0.8": power >= 0.8,
            "power_sequential": power_seq,
            "power_sequential_se": float(np.sqrt(power_seq * (1 - power_seq) / len(res))),
            "predicted_power_sequential": stats.power_sequential(p0, p1, n, tau, looks=fractions),
            "power_sequential_ge_0.8": power_seq >= 0.8,
            "observed_mean_difference": float(diffs.mean()),
            "observed_sd_difference": sd,
            "planned_se_difference": planned_se,
            "sd_over_planned_se": sd / planned_se,
            "sd_over_planned_se_se": float(1 / np.sqrt(2 * (len(res) - 1))),
            "cuped_variance_cut_conversion": float(
                np.mean([r["cuped_cut"]["conversion"] for r in res])
            ),
            "cuped_variance_cut_watch_minutes": float(
                np.mean([r["cuped_cut"]["watch_minutes"] for r in res])
            ),
        }
    return out


def interleave_study(seed: int = 300, draws: int = 200) -> dict[str, Any]:
    """Users the sign test needs vs the A/B z test, on the same simulated users."""
    cfg = experiment_config({"control": 50, "treatment": 50}, salt="il", mode="interleave")
    run = simulate(
        cfg,
        {"control": "popularity", "treatment": "blend:0.3"},
        users=USERS,
        movies=MOVIES,
        hours=HOURS,
        seed=seed,
        world_seed=seed,
    )
    il = _looks(run, step_min=int(HOURS * 60))[-1]
    ca, cb = il.get("credit:control"), il.get("credit:treatment")
    assert ca is not None and cb is not None
    ab_c = _looks(_run({"control": "popularity", "treatment": "popularity"}, seed))[-1]
    ab_t = _looks(_run({"control": "blend:0.3", "treatment": "blend:0.3"}, seed))[-1]
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {
        "users": int(il["user_id"].size),
        "prefer_treatment": int((cb > ca).sum()),
        "prefer_control": int((ca > cb).sum()),
        "sizes": {},
    }
    for n in (50, 100, 200, 400, 800):
        if n > min(il["user_id"].size, ab_c["user_id"].size // 2, ab_t["user_id"].size // 2):
            break
        hits_il = hits_ab = 0
        for _ in range(draws):
            pick = rng.choice(il["user_id"].size, n, replace=False)
            wins, losses = int((cb[pick] > ca[pick]).sum()), int((ca[pick] > cb[pick]).sum())
            hits_il += stats.sign_test(wins, losses) < 0.05
            c = rng.choice(ab_c["user_id"].size, n // 2, replace=False)
            t = rng.choice(ab_t["user_id"].size, n // 2, replace=False)
            x0, x1 = int((ab_c["successes"][c] > 0).sum()), int((ab_t["successes"][t] > 0).sum())
            hits_ab += stats.two_proportions(x0, n // 2, x1, n // 2).p_value < 0.05
        out["sizes"][str(n)] = {
            "power_interleave_sign_test": hits_il / draws,
            "power_ab_z_test": hits_ab / draws,
        }
    return out


# --- lag and recompute on a real event store --------------------------------------------------


def _synthetic(
    rng: np.random.Generator,
    n: int,
    t0: int,
    t1: int,
    users: int,
    movies: list[str],
    exposure_share: float,
) -> dict[str, dict[str, Any]]:
    """``n`` events between t0 and t1: watches (mostly of listed movies) and exposures."""
    n_exp = int(n * exposure_share)
    n_watch = n - n_exp
    te = np.sort(rng.integers(t0, t1, n_exp))
    ue = rng.integers(1, users + 1, n_exp)
    lists = rng.integers(0, len(movies), (n_exp, 10))
    arm = np.where(ue % 2 == 0, "control", "treatment")
    exposures = {
        "time_ns": te,
        "user_id": ue,
        "experiment": ["bench"] * n_exp,
        "arm": arm.tolist(),
        "model_name": ["svd"] * n_exp,
        "model_version": ["v1"] * n_exp,
        "status": np.full(n_exp, 200, np.int16),
        "latency_ms": rng.integers(5, 80, n_exp),
        "fallback": [None] * n_exp,
        "items": [[movies[j] for j in row] for row in lists.tolist()],
        "item_arms": [None] * n_exp,
    }
    tw = np.sort(rng.integers(t0, t1, n_watch))
    uw = rng.integers(1, users + 1, n_watch)
    mw = rng.integers(0, len(movies), n_watch)
    watches = {
        "time_ns": tw,
        "user_id": uw,
        "movie_id": pa.DictionaryArray.from_arrays(
            pa.array(mw.astype(np.int32)), pa.array(movies)
        ).cast(pa.string()),
        "minute": rng.integers(0, 120, n_watch).astype(np.int32),
    }
    return {"exposure": exposures, "watch": watches}


def _recompute_child(root: str, until: int, q: Any) -> None:
    started = time.perf_counter()
    from services.monitor.sources import StoreSource

    src = StoreSource([root])
    ev = Evaluator(src.read, "bench")
    ev.advance(until)
    q.put(
        {
            "evaluate_seconds": time.perf_counter() - started,
            "users": ev.state.n_users,
            "lists": int(ev.state.users["lists"].sum()),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
    )


def recompute_study(n_events: int) -> dict[str, Any]:
    """One evaluation from scratch over ``n_events`` in a real event store."""
    from services.ingest.store import EventStore

    rng = np.random.default_rng(5)
    movies = [f"movie+{i}+{1950 + i % 70}" for i in range(5000)]
    day = 86_400 * 1_000_000_000
    t0 = 1_772_409_600 * 1_000_000_000
    with tempfile.TemporaryDirectory() as tmp:
        store = EventStore(tmp, writer=True)
        chunk, offset, written = 1_000_000, 0, 0
        k = 0
        while written < n_events:
            n = min(chunk, n_events - written)
            lo = t0 + k * day // 4
            ev = _synthetic(rng, n, lo, lo + day // 4, 100_000, movies, 0.05)
            tables = {}
            for kind, cols in ev.items():
                tables[kind] = store_table(kind, cols, offset)
                offset += len(cols["time_ns"])
            store.commit(
                tables,
                {("movielog", 0): (offset - n, offset - 1)},
                {("movielog", 0): lo + day // 4},
            )
            written += n
            k += 1
        store.close()
        ctx = mp.get_context("spawn")
        q = ctx.Queue()
        p = ctx.Process(target=_recompute_child, args=(tmp, t0 + k * day // 4 + 1, q))
        p.start()
        out: dict[str, Any] = q.get(timeout=3600)
        p.join()
    out["events"] = n_events
    out["events_per_second"] = n_events / out["evaluate_seconds"]
    return out


def lag_study(seconds: float, rate: int = 1000, speed: float = 60.0) -> dict[str, Any]:
    """Event -> metric lag with events committed at ``rate``/s and simulated time at ``speed``."""
    from services.ingest.store import EventStore
    from services.monitor.actions import FileConfigStore, to_yaml
    from services.monitor.core import Monitor
    from services.monitor.sources import StoreSource

    rng = np.random.default_rng(6)
    movies = [f"movie+{i}+{1950 + i % 70}" for i in range(2000)]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "store"
        store = EventStore(root, writer=True)
        cfg = experiment_config({"control": 50, "treatment": 50}, experiment="bench")
        (Path(tmp) / "exp.yaml").write_text(to_yaml(cfg))
        mon = Monitor(
            StoreSource([root]),
            FileConfigStore(Path(tmp) / "exp.yaml"),
            checkpoint_dir=Path(tmp) / "ckpt",
            dry_run=True,
            lateness_ns=0,
        )
        commits: list[tuple[float, int]] = []
        steps: list[tuple[float, int]] = []
        stop = threading.Event()

        def stepper() -> None:
            while not stop.is_set():
                r = mon.step()
                if r is not None:
                    steps.append((time.perf_counter(), r.analysis.edge_ns))
                stop.wait(0.5)

        t_event = 1_772_409_600 * 1_000_000_000
        offset = 0
        th = threading.Thread(target=stepper)
        th.start()
        start = time.perf_counter()
        k = 0
        while time.perf_counter() - start < seconds:
            lo = t_event
            t_event += int(speed * 1e9)
            ev = _synthetic(rng, rate, lo, t_event, 5000, movies, 0.1)
            tables = {}
            for kind, cols in ev.items():
                tables[kind] = store_table(kind, cols, offset)
                offset += len(cols["time_ns"])
            store.commit(
                tables, {("movielog", 0): (offset - rate, offset - 1)}, {("movielog", 0): t_event}
            )
            commits.append((time.perf_counter(), t_event))
            k += 1
            time.sleep(max(0.0, start + k - time.perf_counter()))
        time.sleep(2.0)
        stop.set()
        th.join()
        store.close()
    window = 15 * MIN
    lags = []
    for wall, head in commits:
        # The exposures this commit closes are those up to head - window.
        done = next((w for w, edge in steps if edge >= head - window and w >= wall), None)
        if done is not None:
            lags.append(done - wall)
    arr = np.array(lags) if lags else np.array([np.nan])
    return {
        "events_per_second": rate,
        "simulated_speed": speed,
        "commits": len(commits),
        "steps": len(steps),
        "lag_p50_s": float(np.nanpercentile(arr, 50)),
        "lag_p99_s": float(np.nanpercentile(arr, 99)),
        "lag_max_s": float(np.nanmax(arr)),
        "step_interval_s": 0.5,
    }


def _carried(names: set[str]) -> dict[str, Any]:
    """The other studies' results from the newest full run, each marked with where it came from
    (a partial run must not drop their numbers from the dated file it replaces)."""
    files = sorted(p for p in RESULTS.glob("*/monitor.json") if p.parent.name[:1].isdigit())
    if not files:
        return {}
    doc = json.loads(files[-1].read_text())
    source = f"{files[-1].parent.name} run of {doc.get('when')} (git {doc.get('git_sha')})"
    return {
        k: {**v, "carried_from": v.get("carried_from", source)}
        for k, v in doc.get("results", {}).items()
        if k not in names
    }


def run(quick: bool = False) -> dict[str, Any]:
    """All the studies (``quick``: fewer worlds and a 1M-event recompute).

    ``MARQUEE_BENCH_MONITOR_ONLY=power_oracle,power_blend`` runs only the named studies and
    carries the others' results, marked, from the newest dated file.
    """
    studies: dict[str, Any] = {
        "aa": lambda: aa_study(worlds=3 if quick else 10, salts=20),
        "power_oracle": lambda: power_study(
            "oracle", "oracle", 1 if quick else 3, 50 if quick else POWER_EXPERIMENTS
        ),
        "power_blend": lambda: power_study(
            "blend", "blend:0.4", 1 if quick else 3, 50 if quick else POWER_EXPERIMENTS
        ),
        "interleave": lambda: interleave_study(draws=100 if quick else 300),
        "lag": lambda: lag_study(seconds=15 if quick else 60),
        "recompute": lambda: recompute_study(1_000_000 if quick else 10_000_000),
    }
    only = [n for n in os.environ.get("MARQUEE_BENCH_MONITOR_ONLY", "").split(",") if n]
    unknown = sorted(set(only) - set(studies))
    if unknown:
        raise ValueError(f"unknown monitor studies {unknown}; available: {sorted(studies)}")
    out: dict[str, Any] = {}
    for name, study in studies.items():
        if only and name not in only:
            continue
        started = time.perf_counter()
        try:
            out[name] = study()
        except Exception as exc:  # one failed study must not hide the others' numbers
            out[name] = {"error": f"{type(exc).__name__}: {exc}"}
        out[name]["seconds"] = round(time.perf_counter() - started, 1)
        print(f"  {name}: {out[name]}", flush=True)
    if only and not quick:
        out = _carried(set(out)) | out
        out = {k: out[k] for k in studies if k in out}
    return out
