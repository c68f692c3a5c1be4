"""``make demo``: a real A/B experiment end to end on this machine, then what happened.

1. Kafka (KRaft) and the simulator's user/movie API start on loopback; the simulator backfills
   ``--days`` of a ``--users`` x ``--movies`` world into Kafka (default ``scripts.stack.World``:
   4 weeks of 5,000 users x 2,000 movies, 50 new accounts a day, the world
   ``benchmarks/bench_lift.py`` measures; some lines malformed on purpose) while ingest stores
   ``movielog`` and ``exposures`` exactly once (quarantining the malformed lines with a
   reason); one training run registers every family on ``canary``.
2. Arms: treatment = the best model on validation NDCG@20 (on ``canary``); control = popularity,
   the incumbent (its version pointed to by ``stable``).  Two gunicorn recommenders serve them.
3. The truth: the world goes on from where the backfill ended (the same users, its accounts
   open, each remembering the movies they finished) once per arm, asking that arm's
   recommender directly (no router, no monitor), so the same simulated users meet both models;
   the difference in conversion is the simulator's known truth.  If it is too small for the
   experiment's planned users to find, the demo says so and takes the weakest model on
   validation as control instead.
4. The router splits users 50/50 (exposures to Kafka, stamped with the simulated clock), the
   monitor evaluates, decides by the experiment's policy and acts (experiment file and registry
   channels), Prometheus scrapes every service, and the simulator streams live through the
   router at ``--speed`` x until the monitor decides (at most ``--max-live-seconds``), its users
   again going on from the backfill.
5. The demo prints the verdict with its reason and numbers, what changed (config and registry
   before and after), whether the verdict matches the truth, the addresses of the experiment
   page and Prometheus, and last the served model's lift over popularity: NDCG@20 on the
   validation and test periods (ratio), and the 15-minute watch rate online (points, from the
   truth's same simulated users, and from the live experiment); ``.run/demo/summary.json``
   keeps it all.

Everything runs under ``.run/demo`` (logs in ``.run/demo/logs``); it is all stopped at the end
unless ``--keep`` is given (then ``make down`` stops it).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import requests

from scripts import truth as truth_mod
from scripts.stack import (
    DEFAULT_POLICY,
    NDCG,
    RUN,
    SELECT,
    TRUTH_HOURS,
    Arms,
    Ports,
    Stack,
    World,
    choose_arms,
    choose_served,
    find_metric,
    info,
    monitor_api,
    registry_channels,
    say,
    weakest,
)

__all__ = [
    "choose_served",
    "lift_lines",
    "main",
    "online_summary",
    "popularity_online_lift",
    "report_lines",
]


def offline_table(metrics: dict[str, dict[str, Any]]) -> list[str]:
    """One line per registered model: its offline metrics."""
    rows = [f"{'model':<11} {'val NDCG@20':>11} {'NDCG@20':>8} {'HR@20':>7} {'RMSE':>7}"]
    for name, m in sorted(metrics.items()):
        cells = [
            find_metric(m, k)
            for k in (SELECT, NDCG, "test.ranking.hit_rate@20", "test.rating.rmse")
        ]
        rows.append(
            f"{name:<11} "
            + " ".join(
                f"{c:>{w}.4f}" if c is not None else f"{'n/a':>{w}}"
                for c, w in zip(cells, (11, 8, 7, 7), strict=True)
            )
        )
    return rows


def offline_lift(
    metrics: dict[str, dict[str, Any]], model: str, base: str = "popularity"
) -> dict[str, Any]:
    """``model``'s validation and test NDCG@20 against ``base``'s (ratios)."""
    out: dict[str, Any] = {"model": model, "baseline": base}
    for key, path in (("val", SELECT), ("test", NDCG)):
        ours = find_metric(metrics.get(model, {}), path)
        theirs = find_metric(metrics.get(base, {}), path)
        out[f"{key}_ndcg@20"] = ours
        out[f"{key}_ndcg@20_{base}"] = theirs
        out[f"{key}_lift"] = round(ours / theirs, 3) if ours is not None and theirs else None
    return out


def online_summary(store_path: Path, since_ns: int) -> dict[str, Any]:
    """Latency and 15-minute watch rate of the recommendations served during the live phase."""
    from services.common import online
    from services.ingest import derived
    from services.ingest.store import EventStore

    store = EventStore(store_path)
    reco_table = derived.recommendations(store, since_ns=since_ns)
    recos = reco_table.to_pylist()
    watches = store.read("watch", since_ns=since_ns, columns=["user_id", "movie_id", "time_ns"])
    # One definition of success (services.common.online); lists still open at the data's end
    # are pending, not failures.
    rate = online.watch_rate(reco_table, watches)
    per_user = online.user_watch_rate(reco_table, watches)
    ok = [r for r in recos if r["status"] == 200]
    ms = np.array([r["response_time_ms"] for r in ok], dtype=float)
    statuses: dict[str, int] = {}
    for r in recos:
        statuses[str(r["status"])] = statuses.get(str(r["status"]), 0) + 1
    distinct = len({tuple(r["result"]) for r in ok})
    return {
        "recommendation_requests": len(recos),
        "by_status": statuses,
        "latency_ms_p50": float(np.percentile(ms, 50)) if len(ms) else None,
        "latency_ms_p99": float(np.percentile(ms, 99)) if len(ms) else None,
        "distinct_lists_share": round(distinct / len(ok), 3) if ok else None,
        "watched_within_15_min": rate.successes,
        "lists_decided": rate.trials,
        "lists_pending": rate.pending,
        "watch_rate_15_min": round(rate.rate, 3) if rate.trials else None,
        "watch_rate_15_min_mean_per_user": round(per_user.mean, 3) if per_user.users else None,
    }


def prometheus_summary(ports: Ports) -> dict[str, Any]:
    """A few of the numbers Prometheus scraped from the services."""
    queries = {
        "targets_up": "sum(up)",
        "targets": "count(up)",
        "router_requests_per_s": "sum(rate(marquee_router_requests_total[1m]))",
        "router_exposures_sent": "sum(marquee_router_exposure_events_sent_total)",
        "recommender_requests_per_s": "sum(rate(marquee_recommender_requests_total[1m]))",
        "ingest_events_total": "sum(marquee_ingest_events_total)",
        "ingest_rejected_total": "sum(marquee_ingest_rejected_total)",
        "monitor_decisions_total": "sum(marquee_monitor_decisions_total)",
    }
    out: dict[str, Any] = {}
    for key, q in queries.items():
        try:
            r = requests.get(
                f"http://127.0.0.1:{ports.prometheus}/api/v1/query",
                params={"query": q},
                timeout=5,
            )
            result = r.json()["data"]["result"]
            out[key] = round(float(result[0]["value"][1]), 2) if result else None
        except (requests.RequestException, KeyError, IndexError, ValueError):
            out[key] = None
    return out


def measure_truth(
    stack: Stack,
    arms: Arms,
    hours: float,
    seed: int = 7,
    known: dict[str, truth_mod.ArmTruth] | None = None,
) -> truth_mod.Truth:
    """The simulator's truth: the same simulated users ask each arm's recommender directly.

    ``known`` holds arms already measured (same world, seed and model): they are not re-run.
    """
    judged = dict(known or {})
    for arm in ("control", "treatment"):
        if arm not in judged:
            url = f"http://127.0.0.1:{stack.ports.arm(arm)}"
            judged[arm] = _simulate_arm(stack, url, arm, arms.model(arm), hours, seed)
    return truth_mod.compare(judged["control"], judged["treatment"])


def measure_oracle(stack: Stack, hours: float, seed: int = 7) -> truth_mod.ArmTruth:
    """The simulator's oracle (true taste, minus finished movies) on the truth's same users."""
    return _simulate_arm(stack, "builtin:oracle", "ceiling", "oracle", hours, seed)


def _simulate_arm(
    stack: Stack, target: str, label: str, model: str, hours: float, seed: int
) -> truth_mod.ArmTruth:
    """The world after the backfill, every session asking ``target``; judged and logged."""
    from services.simulator.app import world_config
    from services.simulator.evaluation import simulate_lines
    from services.simulator.settings import SimulatorSettings

    w = stack.world
    cfg = world_config(SimulatorSettings(seed=w.seed, n_users=w.users, n_movies=w.movies))
    t0 = time.monotonic()
    lines = simulate_lines(
        cfg,
        target,
        hours,
        seed,
        new_accounts_per_day=w.new_accounts_per_day,
        resume=stack.backfill_state,
    )
    a = truth_mod.judge_lines(lines, model)
    info(
        f"{label:<9} {model:<11} conversion {a.conversion:.3f} of {a.users:,} users,"
        f" watch rate {a.watch_rate:.3f} of {a.lists:,} lists ({time.monotonic() - t0:.0f} s)"
    )
    return a


def decide_truth(
    stack: Stack, arms: Arms, metrics: dict[str, dict[str, Any]], hours: float, planned: int
) -> tuple[Arms, truth_mod.Truth, dict[str, Any]]:
    """The truth for the chosen arms; a weaker control when the difference is too small."""
    say(
        f"the simulator's known truth: {hours:g} simulated hours of the same users per arm,"
        " asking each recommender directly"
    )
    truth = measure_truth(stack, arms, hours)
    notes: dict[str, Any] = {"first": {"control": arms.control, **truth.to_json()}}
    info(_truth_line(truth))
    if truth_mod.detectable(truth, planned):
        return arms, truth, notes
    if truth.verdict == "none":
        info(
            f"{arms.treatment} vs {arms.control}: the truth finds no clear difference, so a few"
            " minutes of traffic would find none either"
        )
    else:
        info(
            f"{arms.treatment} vs {arms.control}: the true difference {truth.diff:+.4f} is below"
            f" what {planned:,} users per arm can detect in a few minutes of traffic"
        )
    control = weakest(metrics, exclude=[arms.treatment, arms.control])
    if control is None:
        info("no weaker model to compare with: the experiment runs as it is")
        return arms, truth, notes
    arms = Arms(
        control,
        arms.treatment,
        f"{arms.treatment} is best on validation; popularity is too close to it online to"
        f" tell apart in minutes, so the weakest model on validation, {control}, is the control",
    )
    arms.versions = {"control": stack.set_control(control)}
    info(f"control is now {control}@stable (weakest on validation NDCG@20)")
    stack.restart_recommender("control", control)
    truth = measure_truth(stack, arms, hours, known={"treatment": truth.treatment})
    info(_truth_line(truth))
    return arms, truth, notes


def _truth_line(t: truth_mod.Truth) -> str:
    return (
        f"truth: treatment - control conversion {t.diff:+.4f} (99% CI {t.ci_low:+.4f} to"
        f" {t.ci_high:+.4f}, p = {t.p_value:.2g}) -> {t.verdict}"
    )


def live_until_decided(stack: Stack, speed: float, max_s: float) -> dict[str, Any] | None:
    """Stream live through the router until the monitor acts; its acting decision or None."""
    say(
        f"streaming live through the router at {speed:g}x simulated speed until the monitor"
        f" decides (at most {max_s:.0f} s)"
    )
    stack.start_live(speed, max_s + 60)
    t0 = time.monotonic()
    last = 0.0
    while time.monotonic() - t0 < max_s:
        stack.procs.check("sim-live")
        hist = monitor_api(stack.ports, "/api/history?limit=50") or {}
        acting = [d for d in hist.get("decisions", []) if d.get("action") != "continue"]
        if acting:
            return dict(acting[0])
        if time.monotonic() - last >= 15:
            last = time.monotonic()
            info(progress_line(monitor_api(stack.ports, "/api/experiment"), time.monotonic() - t0))
        time.sleep(2)
    return None


def progress_line(snap: dict[str, Any] | None, elapsed: float) -> str:
    """One line of the monitor's state while a person waits."""
    if not snap:
        return f"{elapsed:4.0f} s: the monitor has no evaluation step yet"
    a = snap.get("analysis", {})
    arms = ", ".join(
        f"{r['arm']} {r['users']} users conv {r['conversion']:.3f}"
        for r in a.get("arms", [])
        if r.get("conversion") is not None
    )
    p = ""
    for c in a.get("comparisons", []):
        p = f"; always-valid p {c['sequential']['p_value']:.3g}"
    return f"{elapsed:4.0f} s: {arms}{p}; {snap.get('decision', {}).get('reason', '')}"


def arm_rates(snap: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Per arm from the monitor's last analysis: users, conversion, watch rate, lists."""
    out: dict[str, dict[str, Any]] = {}
    for r in (snap or {}).get("analysis", {}).get("arms", []):
        out[r["arm"]] = {k: r.get(k) for k in ("users", "conversion", "watch_rate", "requests")}
    return out


def report_lines(s: dict[str, Any]) -> list[str]:
    """The demo's closing report, from its summary document."""
    lines: list[str] = []
    d = s.get("decision") or {}
    arms = s["arms"]
    lines.append(
        f"experiment {s['experiment']}: control {arms['control']}@stable vs treatment"
        f" {arms['treatment']}@canary ({arms['why']})"
    )
    if d:
        lines.append(f"monitor verdict: {d['action']} -- {d['reason']}")
        nums = {k: v for k, v in (d.get("numbers") or {}).items() if k != "arms"}
        lines.append(f"  numbers: {json.dumps(nums, default=str)}")
    else:
        lines.append("monitor verdict: none within the live phase (the experiment still runs)")
    before, after = s["config_before"], s["config_after"]
    lines.append(
        "config: status {} -> {}, exposure {} -> {}, winner {} -> {}, weights {} -> {}".format(
            before["status"], after["status"], before["exposure"], after["exposure"],
            before.get("winner"), after.get("winner"), before["weights"], after["weights"],
        )
    )  # fmt: skip
    for model, chans in s["registry_after"].items():
        was = s["registry_before"].get(model, {})
        moves = [f"{c} {was.get(c)} -> {v}" for c, v in chans.items() if was.get(c) != v]
        lines.append(f"registry {model}: {'; '.join(moves) if moves else 'unchanged'}")
    t = s["truth"]
    lines.append(
        f"truth (simulator, same users, each recommender asked directly): conversion"
        f" {t['control']['conversion']:.3f} -> {t['treatment']['conversion']:.3f}"
        f" ({t['conversion_diff']:+.4f}, 99% CI {t['ci99'][0]:+.4f} to {t['ci99'][1]:+.4f})"
        f" -> {t['verdict']}"
    )
    lines.append(s["agreement"])
    on = s["online_by_arm"]
    cells = [
        f"{arm} ({arms[arm]}) watch rate {_num(r.get('watch_rate'))}, conversion"
        f" {_num(r.get('conversion'))} over {r.get('users')} users"
        for arm, r in on.items()
        if arm in ("control", "treatment")
    ]
    lines.append("online, 15-minute watch (monitor): " + "; ".join(cells))
    for what, where in s["addresses"].items():
        lines.append(f"{what}: {where}")
    return lines


def lift_lines(s: dict[str, Any]) -> list[str]:
    """The served model against popularity, offline and online: the demo's headline."""
    off = s["offline_lift"]
    model = off["model"]
    lines = [f"served: {model}, the treatment ({s['arms']['why']})"]
    for period, name in (("val", "validation"), ("test", "test")):
        lines.append(
            f"offline NDCG@20, {name + ' period:':<19} {model} {_num(off[f'{period}_ndcg@20'])}"
            f" vs popularity {_num(off[f'{period}_ndcg@20_popularity'])}"
            f"  ->  {_x(off[f'{period}_lift'])} popularity"
        )
    p = s.get("popularity_online")
    if p is not None:
        lines.append(
            f"online 15-minute watch rate (simulator truth, the same users): {model}"
            f" {p['served']:.3f} vs popularity {p['popularity']:.3f}  ->  {100 * p['diff']:+.1f}"
            f" points ({p['diff']:+.3f}, p = {p['p_value']:.2g})"
        )
        if p.get("oracle_gap_closed") is not None:
            lines.append(
                f"closing {p['oracle_gap_closed']:.0%} of the gap between popularity and the"
                f" simulator's oracle ({p['oracle']:.3f}: true taste, on the same users)"
            )
        lines.append(
            f"online conversion (users with a success, simulator truth): {model}"
            f" {p['served_conversion']:.3f} vs popularity {p['popularity_conversion']:.3f}"
            f"  ->  {100 * (p['served_conversion'] - p['popularity_conversion']):+.1f} points"
        )
    else:
        lines.append("online against popularity: not measured (popularity was not the control)")
    arms, on = s["arms"], s["online_by_arm"]
    ctl, trt = on.get("control", {}), on.get("treatment", {})
    if arms["control"] == "popularity" and None not in (
        ctl.get("watch_rate"),
        trt.get("watch_rate"),
    ):
        diff = trt["watch_rate"] - ctl["watch_rate"]
        lines.append(
            f"online 15-minute watch rate (live experiment, monitor): {model}"
            f" {trt['watch_rate']:.3f} vs popularity {ctl['watch_rate']:.3f}  ->  "
            f"{100 * diff:+.1f} points ({trt.get('users')} vs {ctl.get('users')} users)"
        )
    return lines


def _num(v: Any) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def _x(v: Any) -> str:
    return "n/a" if v is None else f"{v:.2f}x"


def _config_view(stack: Stack) -> dict[str, Any]:
    from services.monitor.actions import FileConfigStore

    cfg = FileConfigStore(stack.experiment).read()
    return {
        "status": str(cfg.status),
        "exposure": cfg.exposure,
        "winner": cfg.winner,
        "weights": {a.name: a.weight for a in cfg.arms},
    }


def main(argv: list[str] | None = None) -> int:
    """Run the demo."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    defaults = World()
    ap.add_argument("--users", type=int, default=defaults.users, help="users in the world")
    ap.add_argument("--movies", type=int, default=defaults.movies, help="movies in the catalog")
    ap.add_argument("--days", type=float, default=defaults.days, help="days of history")
    ap.add_argument(
        "--malformed-rate", type=float, default=0.002, help="share of malformed lines injected"
    )
    # 600x: the world's 5,000 users start about 42 sessions a wall second, so about 1,000 of
    # them per arm have met it within a minute.
    ap.add_argument("--speed", type=float, default=600, help="simulated seconds per wall second")
    ap.add_argument(
        "--max-live-seconds", type=float, default=300, help="longest live phase (wall seconds)"
    )
    ap.add_argument(
        "--truth-hours",
        type=float,
        default=TRUTH_HOURS,
        help=f"simulated hours per truth arm (default {TRUTH_HOURS:g}: a day of the world)",
    )
    ap.add_argument("--min-users", type=int, default=500, help="policy: users per arm to decide")
    ap.add_argument(
        "--max-users",
        type=int,
        help="policy: planned users per arm (default half the world's users: all of them split)",
    )
    ap.add_argument("--run-dir", type=Path, default=RUN, help="run folder (default .run/demo)")
    ap.add_argument("--port-base", type=int, help="ten consecutive ports from here (tests)")
    ap.add_argument("--keep", action="store_true", help="leave the services running at the end")
    args = ap.parse_args(argv)

    ports = Ports.from_base(args.port_base) if args.port_base else Ports()
    world = World(args.users, args.movies, args.days, args.malformed_rate)
    stack = Stack(args.run_dir, ports, world)
    max_users = args.max_users or max(args.min_users, world.users // 2)
    policy = {**DEFAULT_POLICY, "min_users": args.min_users, "max_users": max_users}
    t_start = time.monotonic()
    stack.fresh()
    try:
        summary: dict[str, Any] = stack.up_to_models()
        metrics = stack.offline_metrics()
        for line in offline_table(metrics):
            info(line)
        arms = choose_arms(metrics)
        arms.versions = {"control": stack.set_control(arms.control)}
        info(f"treatment {arms.treatment}@canary, control {arms.control}@stable: {arms.why}")
        stack.start_recommenders(arms)
        t0 = time.monotonic()
        first_control = arms.control
        arms, truth, notes = decide_truth(stack, arms, metrics, args.truth_hours, max_users)
        oracle = measure_oracle(stack, args.truth_hours) if first_control == "popularity" else None
        summary["truth_seconds"] = round(time.monotonic() - t0, 1)
        doc = stack.serve_experiment(arms, policy)
        summary["experiment"] = doc["experiment"]
        models = sorted({arms.control, arms.treatment})
        summary["config_before"] = _config_view(stack)
        summary["registry_before"] = registry_channels(stack.registry, models)

        t0, live_since = time.monotonic(), time.time_ns()
        decision = live_until_decided(stack, args.speed, args.max_live_seconds)
        summary["live_seconds"] = round(time.monotonic() - t0, 1)
        if decision is not None:
            info(f"the monitor decided after {summary['live_seconds']:.0f} s: {decision['action']}")
            time.sleep(3)  # the router re-reads the file; one more monitor step records it
        snap = monitor_api(stack.ports, "/api/experiment")
        stack.procs.stop(["sim-live"])

        summary["arms"] = {
            "control": arms.control, "treatment": arms.treatment, "why": arms.why,
        }  # fmt: skip
        summary["decision"] = decision
        summary["config_after"] = _config_view(stack)
        summary["registry_after"] = registry_channels(stack.registry, models)
        summary["truth"] = truth.to_json()
        summary["truth_notes"] = notes
        verdict = truth_mod.monitor_verdict(
            decision.get("action") if decision else None, decision.get("arm") if decision else None
        )
        summary["monitor_verdict"] = verdict
        summary["agreement"] = truth_mod.agreement(truth.verdict, verdict)
        summary["offline_lift"] = offline_lift(metrics, arms.treatment)
        summary["online_by_arm"] = arm_rates(snap)
        # Every list the simulated users were served during the live phase, as the stream saw
        # it (latency at the client, pending lists included).
        summary["online"] = online_summary(stack.store, live_since)
        pop = popularity_online_lift(truth, notes, arms, first_control)
        if pop is not None:
            if oracle is not None:
                pop["oracle"] = round(oracle.watch_rate, 4)
                gap = oracle.watch_rate - pop["popularity"]
                if gap > 0:
                    pop["oracle_gap_closed"] = round(pop["diff"] / gap, 3)
            summary["popularity_online"] = pop
        summary["prometheus"] = prometheus_summary(stack.ports)
        summary["addresses"] = {
            k: v
            for k, v in stack.ports.addresses().items()
            if k in ("experiment page (monitor)", "Prometheus", "monitor JSON API")
        }
        summary["total_seconds"] = round(time.monotonic() - t_start, 1)
        (stack.run / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")

        say("what happened")
        for line in report_lines(summary):
            info(line)
        info(f"served lists (stream): {json.dumps(summary['online'])}")
        info(f"prometheus: {json.dumps(summary['prometheus'])}")
        say("the served model's lift over popularity")
        for line in lift_lines(summary):
            info(line)
        info(f"{summary['total_seconds']:.0f} s in all; logs in {stack.logs}")
        info(f"summary in {stack.run / 'summary.json'}")
        return 0
    finally:
        if args.keep:
            info("--keep: the stack is left running; 'make down' stops it")
            stack.procs.close_logs()
        else:
            stack.down()


def popularity_online_lift(
    truth: truth_mod.Truth, notes: dict[str, Any], arms: Arms, first_control: str
) -> dict[str, float] | None:
    """The served model's online watch rate and conversion against popularity's (truth runs).

    ``p_value``: two-sided two-proportion z test of the watch rates over the decided lists.
    """
    if first_control != "popularity":
        return None
    if arms.control == "popularity":
        pop, served = truth.control.to_json(), truth.treatment.to_json()
    else:
        pop, served = notes["first"]["control"], notes["first"]["treatment"]
    return {
        "popularity": pop["watch_rate"],
        "served": served["watch_rate"],
        "diff": served["watch_rate"] - pop["watch_rate"],
        "p_value": rate_p_value(
            (pop["successes"], pop["lists"]), (served["successes"], served["lists"])
        ),
        "popularity_conversion": pop["conversion"],
        "served_conversion": served["conversion"],
        "lists": min(pop["lists"], served["lists"]),
    }


def rate_p_value(a: tuple[int, int], b: tuple[int, int]) -> float:
    """Two-sided p-value of two success rates (successes, trials) being equal (pooled z test)."""
    import math

    from statsmodels.stats.proportion import proportions_ztest

    (sa, na), (sb, nb) = a, b
    if not (na and nb):
        return 1.0
    if (sa + sb) in (0, na + nb):  # no variance: the rates are equal (both 0 or both 1)
        return 1.0
    _, p = proportions_ztest([sb, sa], [nb, na])
    return 1.0 if math.isnan(p) else float(p)


if __name__ == "__main__":
    sys.exit(main())
