"""The monitor's studies: A/A false positives, power, CUPED, interleaving; lag and recompute.

Experiments are drawn from the simulator in process (``tests.monitor.simab``: the simulator's
world, the router's assignment, builtin arms), evaluated by the monitor's own evaluator, and
tested with its own statistics.

* **A/A**: per world, one run in which everyone gets popularity; each of many salts splits the
  users 50/50 again (a fresh randomization of the same users).  Worlds x salts >= 200 A/A
  experiments.  Fixed-horizon z test at the end; mSPRT looked at after every batch (30 min of
  event time).  Targets: fixed FPR in [0.03, 0.07]; sequential FPR <= 0.05.
* **Power**: per world, one run where everyone gets control's model and one where everyone
  gets treatment's (same world, same seed); the worlds' users are pooled (ids made unique per
  world), and each experiment's salt splits the pool with the router's two hashes, taking
  control users from the first runs and treatment users from the second.  The planned effect
  is the simulator's truth for that population (conversion of all pooled users under each
  model); the planned size is ``sample_size_proportions`` (power 0.8 of the pooled z test);
  the exposure share is set so each arm gets about that many users (and 1.5x as many).  The
  pool is many times an experiment (bigger worlds than the A/A study's), so every planned size
  is reached and experiments share few users: 250 experiments give power within about +-0.05
  (95 %).  The planning is checked too: the spread of the observed differences against the
  standard error the plan assumed.  Effects: oracle vs popularity (large) and a 40 % oracle
  blend vs popularity (smaller); both share the popularity runs.  CUPED's variance reduction
  is measured on the same experiments.
* **Interleaving**: the same users served a team-draft of popularity and the blend; the sign
  test's users needed vs the A/B test's, by subsampling users.
* **Lag**: events committed to a real event store at 1,000 events/s (1 s batches, simulated
  time at 60x), the monitor stepping every 0.5 s; lag = wall time from the commit that closes a
  window to the step that includes it.
* **Recompute**: 10M events in an event store, one evaluation from scratch: time and peak RSS
  (in a child process).
"""

from __future__ import annotations

import multiprocessing as mp
import resource
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

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

    def __init__(self, ids: np.ndarray, salt: str) -> None:
        self.ids = ids  # sorted, unique
        self.exposure = np.array([bucket(salt + ":exposure", int(u)) for u in ids])
        self.arm = np.array([bucket(salt, int(u)) for u in ids])

    def split(self, users: np.ndarray, share: float) -> tuple[np.ndarray, np.ndarray]:
        """(in experiment, treatment?) per user."""
        i = np.searchsorted(self.ids, users)
        return self.exposure[i] < share * BUCKETS, self.arm[i] >= BUCKETS // 2


def _test(
    c: dict[str, np.ndarray], t: dict[str, np.ndarray], tau: float, prev: float
) -> tuple[float, float, float]:
    """(fixed-horizon p, always-valid p, difference) of conversion, control ``c`` vs ``t``."""
    x0, n0 = int((c["successes"] > 0).sum()), int(c["user_id"].size)
    x1, n1 = int((t["successes"] > 0).sum()), int(t["user_id"].size)
    fixed = stats.two_proportions(x0, n0, x1, n1)
    seq = stats.msprt(fixed.diff, fixed.se**2, tau, previous_p=prev)
    return fixed.p_value, seq.p_value, fixed.diff


def _sel(u: dict[str, np.ndarray], mask: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[mask] for k, v in u.items()}


def _experiments(
    looks_c: list,
    looks_t: list,
    salts: list[str],
    shares: list[float],
    tau: float,
) -> list[list[dict[str, Any]]]:
    """Per share: fixed and sequential p of each salt's split (control from ``looks_c``,
    treatment from ``looks_t``), plus the difference, per-arm users and CUPED's cut."""
    ids = np.unique(np.concatenate([lk["user_id"] for lk in [*looks_c, *looks_t]]))
    out: list[list[dict[str, Any]]] = [[] for _ in shares]
    for salt in salts:
        hashes = _Buckets(ids, salt)
        for share, results in zip(shares, out, strict=True):
            results.append(_experiment(looks_c, looks_t, hashes, share, tau))
    return out


def _experiment(
    looks_c: list, looks_t: list, hashes: _Buckets, share: float, tau: float
) -> dict[str, Any]:
    """One experiment: its looks, then CUPED's variance cut at the end."""
    seq_p = fixed_p = 1.0
    diff = 0.0
    for lc, lt in zip(looks_c, looks_t, strict=True):
        ec, tc = hashes.split(lc["user_id"], share)
        et, tt = hashes.split(lt["user_id"], share)
        c, t = _sel(lc, ec & ~tc), _sel(lt, et & tt)
        if c["user_id"].size < 2 or t["user_id"].size < 2:
            continue
        fixed_p, seq_p, diff = _test(c, t, tau, seq_p)
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
        "users": (int(c["user_id"].size), int(t["user_id"].size)),
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
    difference over all pooled users, each served by one model throughout.
    """
    looks_c, looks_t = _pool("popularity", worlds), _pool(treatment, worlds)
    p0 = float(np.mean(looks_c[-1]["successes"] > 0))
    p1 = float(np.mean(looks_t[-1]["successes"] > 0))
    # Planned for the test that is run: the pooled-variance z test (statsmodels' formula).
    planned = stats.sample_size_proportions(p0, p1)
    pool = min(looks_c[-1]["user_id"].size, looks_t[-1]["user_id"].size)
    factors = (1.0, 1.5)
    sizes = [round(planned * f) for f in factors]
    shares = [2 * n / pool for n in sizes]
    if max(shares) > 1:
        raise ValueError(f"{pool} pooled users cannot give two arms of {max(sizes)}")
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
        "by_size": {},
    }
    salts = [f"pw-{name}-{s}" for s in range(experiments)]
    per_share = _experiments(looks_c, looks_t, salts, shares, max(abs(p1 - p0), 0.01))
    for factor, n, res in zip(factors, sizes, per_share, strict=True):
        fixed = np.array([r["fixed_p"] for r in res])
        seq = np.array([r["sequential_p"] for r in res])
        diffs = np.array([r["diff"] for r in res])
        users = np.array([r["users"] for r in res], dtype=float)
        power = float((fixed < 0.05).mean())
        mean_n = float(users.mean())
        # The plan's standard error of the difference (each arm's own rate, as the alternative
        # of the power formula), at the users the experiments really had.
        var = p0 * (1 - p0) / users[:, 0] + p1 * (1 - p1) / users[:, 1]
        planned_se = float(np.mean(np.sqrt(var)))
        out["by_size"][f"{factor:g}x"] = {
            "users_per_arm": n,
            "users_per_arm_mean": mean_n,
            "share_of_pool_per_experiment": 2 * n / pool,
            "experiments": len(res),
            "power_fixed": power,
            "power_fixed_se": float(np.sqrt(power * (1 - power) / len(res))),
            "predicted_power_at_mean_users": stats.power_proportions(p0, p1, mean_n),
            "power_fixed_ge_0.8": power >= 0.8,
            "power_sequential": float((seq < 0.05).mean()),
            "observed_mean_difference": float(diffs.mean()),
            "observed_sd_difference": float(diffs.std(ddof=1)),
            "planned_se_difference": planned_se,
            "sd_over_planned_se": float(diffs.std(ddof=1) / planned_se),
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


def run(quick: bool = False) -> dict[str, Any]:
    """All the studies (``quick``: fewer worlds and a 1M-event recompute)."""
    studies: dict[str, Any] = {
        "aa": lambda: aa_study(worlds=3 if quick else 10, salts=20),
        "power_oracle": lambda: power_study(
            "oracle", "oracle", 1 if quick else 3, 50 if quick else 250
        ),
        "power_blend": lambda: power_study(
            "blend", "blend:0.4", 1 if quick else 3, 50 if quick else 250
        ),
        "interleave": lambda: interleave_study(draws=100 if quick else 300),
        "lag": lambda: lag_study(seconds=15 if quick else 60),
        "recompute": lambda: recompute_study(1_000_000 if quick else 10_000_000),
    }
    out: dict[str, Any] = {}
    for name, study in studies.items():
        started = time.perf_counter()
        try:
            out[name] = study()
        except Exception as exc:  # one failed study must not hide the others' numbers
            out[name] = {"error": f"{type(exc).__name__}: {exc}"}
        out[name]["seconds"] = round(time.perf_counter() - started, 1)
        print(f"  {name}: {out[name]}", flush=True)
    return out
