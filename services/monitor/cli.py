"""``marquee monitor``: run the live monitor, analyze a saved experiment, migrate the history.

marquee monitor analyze --config experiment.yaml --lines stream.log --lines exposures.log
marquee monitor analyze --config experiment.yaml --store data/events --json
marquee monitor run --config experiment.yaml --store data/events --registry models
marquee monitor migrate --db postgresql+psycopg://postgres@127.0.0.1:15432/marquee
marquee monitor plan --control 0.67 --treatment 0.75 --config experiment.yaml   # max_users
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger("marquee.monitor")


def _analyze(args: argparse.Namespace) -> int:
    from services.common.experiment import ConfigError
    from services.monitor.actions import FileConfigStore
    from services.monitor.analysis import analyze
    from services.monitor.evaluation import Evaluator
    from services.monitor.policy import decide
    from services.monitor.sources import LinesSource, StoreSource

    if bool(args.lines) == bool(args.store):
        print("monitor analyze: give --lines FILE... or --store DIR..., not both", file=sys.stderr)
        return 2
    try:
        config = FileConfigStore(args.config).read()
    except ConfigError as exc:
        print(f"monitor analyze: {exc}", file=sys.stderr)
        return 2
    missing = [p for p in (args.lines or args.store) if not Path(p).exists()]
    if missing:
        print(f"monitor analyze: not found: {', '.join(missing)}", file=sys.stderr)
        return 2
    if args.lines:
        src: Any = LinesSource(args.lines)
        until = src.end_ns()
    else:
        src = StoreSource(args.store)
        until = src.complete_until(0)
        until = 0 if until is None else until + 1
    ev = Evaluator(src.read, config.experiment, lookback_ns=int(args.lookback_s * 1e9))
    ev.advance(until)
    analysis = analyze(ev.state, config, ev.pending)
    decision = decide(config, analysis, ev.state.marks)
    if args.json:
        print(
            json.dumps(
                {"analysis": analysis.to_json(), "decision": decision.to_json()},
                indent=2,
                default=str,
            )
        )
    else:
        print(_text(analysis.to_json(), decision.to_json()))
    return 0


def _text(a: dict[str, Any], d: dict[str, Any]) -> str:
    def pct(v: Any) -> str:
        return "-" if v is None else f"{100 * v:6.2f}%"

    lines = [
        f"experiment {a['experiment']} (control {a['control']}); {a['pending']} exposures"
        f" pending, {a['unexposed']} unexposed",
        "",
        f"{'arm':<14}{'users':>8}{'conv':>9}  {'95% CI':<19}{'watch rate':>11}"
        f"{'min/user':>10}{'requests':>10}{'errors':>9}{'p99 ms':>8}{'switched':>9}",
    ]
    for r in a["arms"]:
        ci = f"{pct(r['conversion_ci'][0])}-{pct(r['conversion_ci'][1])}"
        lines.append(
            f"{r['arm']:<14}{r['users']:>8}{pct(r['conversion']):>9}  {ci:<19}"
            f"{pct(r['watch_rate']):>11}{r['watch_minutes']:>10.2f}{r['requests']:>10}"
            f"{pct(r['error_rate']):>9}{r['latency_p99_ms']:>8.0f}"
            f"{r['switched_users']:>9}"
        )
    for c in a["comparisons"]:
        f, s = c["fixed"]["conversion"], c["sequential"]
        lines += [
            "",
            f"{c['arm']} vs control ({c['metric']}): diff {s['diff']:+.4f}",
            f"  fixed: p = {f['p_value']:.4g} (Holm {f.get('p_holm', 1):.4g}), 95% CI "
            f"[{f['ci_low']:+.4f}, {f['ci_high']:+.4f}]",
            f"  always valid: p = {s['p_value']:.4g}, confidence sequence "
            f"[{s['ci_low'] if s['ci_low'] is None else round(s['ci_low'], 4)}, "
            f"{s['ci_high'] if s['ci_high'] is None else round(s['ci_high'], 4)}]",
            f"  chance to beat control {100 * c['bayes']['chance_to_beat']:.1f}%,"
            f" expected loss {c['bayes']['loss_treatment']:.4g}",
        ]
        for m, cu in c["cuped"].items():
            if cu:
                lines.append(
                    f"  CUPED {m}: p = {cu['p_value']:.4g}, variance cut"
                    f" {100 * cu['variance_reduction']:.1f}%"
                )
        for m in ("watch_rate", "watch_minutes"):
            fm = c["fixed"][m]
            lines.append(
                f"  {m}: diff {fm['diff']:+.4f}, p = {fm['p_value']:.4g}"
                f" (Holm {fm.get('p_holm', 1):.4g})"
            )
    if a["srm"]:
        lines += [
            "",
            f"sample ratio: chi-square {a['srm']['chi2']:.3f}, p = {a['srm']['p_value']:.4g}",
        ]
    if a.get("interleave"):
        il = a["interleave"]
        lines += [
            "",
            f"interleaving: users preferring {il['prefer']}, ties {il['ties']},"
            f" sign test p = {il['p_value']:.4g}",
        ]
    lines += ["", f"decision: {d['action']}: {d['reason']}"]
    return "\n".join(lines)


def _store(settings: Any) -> Any:
    from services.monitor.actions import ConfigMapStore, FileConfigStore

    if settings.config_path is not None:
        return FileConfigStore(settings.config_path)
    ref, _, key = settings.configmap.partition("#")
    namespace, _, name = ref.partition("/")
    return ConfigMapStore(namespace, name, key or "experiment.yaml")


def _run(args: argparse.Namespace) -> int:
    from services.common.runtime import GracefulStop

    stop = GracefulStop()

    from pydantic import ValidationError

    from services.common.artifacts import Registry
    from services.common.logging import configure_logging
    from services.common.service import BackgroundServer
    from services.monitor.app import create_app
    from services.monitor.core import NS, Monitor
    from services.monitor.history import History
    from services.monitor.settings import MonitorSettings
    from services.monitor.sources import StoreSource

    overrides: dict[str, Any] = {
        k: v
        for k, v in {
            "config_path": args.config,
            "db_url": args.db,
            "registry_path": args.registry,
            "http_port": args.port,
            "http_host": args.host,
            "interval_s": args.interval,
            "lateness_s": args.lateness,
            "checkpoint_dir": args.checkpoint_dir,
        }.items()
        if v is not None
    }
    if args.store:
        overrides["stores"] = tuple(args.store)
    if args.dry_run:
        overrides["dry_run"] = True
    try:
        settings = MonitorSettings(**overrides)
    except ValidationError as exc:
        print(f"monitor run: invalid settings: {exc.errors()[0]['msg']}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_json)
    history = History(settings.db_url)
    history.migrate()
    registry = Registry(settings.registry_path) if settings.registry_path else None
    monitor = Monitor(
        StoreSource(settings.stores),
        _store(settings),
        checkpoint_dir=settings.checkpoint_dir,
        history=history,
        registry=registry,
        dry_run=settings.dry_run,
        lateness_ns=int(settings.lateness_s * NS),
        lookback_ns=int(settings.lookback_s * NS),
    )
    server = BackgroundServer(
        create_app(settings, monitor, history), settings.http_host, settings.http_port
    ).start()
    log.info(
        "monitor listening",
        extra={"host": server.host, "port": server.port, "dry_run": settings.dry_run},
    )
    print(f"monitor: http://{server.host}:{server.port}/", flush=True)
    try:
        while not stop.is_set():
            try:
                monitor.step()
            except Exception:  # one bad step (a config being edited, a store mid-compaction)
                log.exception("evaluation step failed; retrying next interval")
            stop.wait(settings.interval_s)
    finally:
        server.close()
        history.close()
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from services.monitor.history import History

    h = History(args.db)
    try:
        h.migrate()
        print(f"history schema at revision {h.revision()}")
    finally:
        h.close()
    return 0


def _plan(args: argparse.Namespace) -> int:
    from services.common.experiment import ConfigError, Policy
    from services.monitor import stats
    from services.monitor.actions import FileConfigStore

    p0, p1 = args.control, args.treatment
    if not (0 < p0 < 1 and 0 < p1 < 1) or p0 == p1:
        print("monitor plan: --control and --treatment are two rates in (0, 1)", file=sys.stderr)
        return 2
    if args.paths < 100 or not 0 < args.power < 1 or (args.users is not None and args.users < 2):
        print("monitor plan: --paths >= 100, --power in (0, 1), --users >= 2", file=sys.stderr)
        return 2
    if (args.looks is not None and args.looks < 1) or (
        args.look_every is not None and args.look_every <= 0
    ):
        print("monitor plan: --looks and --look-every are positive", file=sys.stderr)
        return 2
    policy = Policy()
    if args.config:
        try:
            policy = FileConfigStore(args.config).read().policy or policy
        except ConfigError as exc:
            print(f"monitor plan: {exc}", file=sys.stderr)
            return 2
    alpha = args.alpha if args.alpha is not None else policy.alpha
    tau = args.mixture_sd if args.mixture_sd is not None else policy.mixture_sd
    looks = {"looks": args.looks, "look_every": args.look_every}
    mc = {"paths": args.paths, "seed": args.seed}
    if args.looks is not None:
        schedule = f"{args.looks} equally spaced looks"
    elif args.look_every is not None:
        schedule = f"a look every {args.look_every:g} users per arm"
    else:
        schedule = "continuous looks (a monitor stepping every few seconds)"
    fixed = stats.sample_size_proportions(p0, p1, alpha, args.power, exact=True)
    seq = stats.sample_size_sequential(p0, p1, tau, alpha, args.power, **looks, **mc)
    doc: dict[str, Any] = {
        "control": p0,
        "treatment": p1,
        "alpha": alpha,
        "power": args.power,
        "mixture_sd": tau,
        "looks": schedule,
        "fixed_horizon_users_per_arm": fixed,
        "sequential_users_per_arm": seq,
        "min_users": policy.min_users,
        "sequential_power_at_fixed_plan": stats.power_sequential(
            p0, p1, fixed, tau, alpha, **looks, **mc
        ),
    }
    if args.users:
        n = args.users
        doc["at_users"] = {
            "users_per_arm": n,
            "power_fixed": stats.power_proportions(p0, p1, n, alpha),
            "power_sequential": stats.power_sequential(p0, p1, n, tau, alpha, **looks, **mc),
            "mde_sequential": stats.mde_sequential(p0, n, tau, alpha, args.power, **looks, **mc),
        }
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    print(
        f"conversion {p0:g} -> {p1:g}, two-sided alpha {alpha:g}, power {args.power:g}\n"
        f"  fixed-horizon z test, one look at the end: {fixed} users per arm\n"
        f"  always-valid mSPRT, as the policy decides: {seq} users per arm"
        f" <- policy.max_users\n"
        f"    (mixture_sd {tau:g}; {schedule}; its power at {fixed} is"
        f" {doc['sequential_power_at_fixed_plan']:.3f})"
    )
    if seq < policy.min_users:
        print(
            f"  note: policy.min_users is {policy.min_users}: nothing is promoted before it,"
            " so max_users must not be below it"
        )
    if args.users:
        at = doc["at_users"]
        print(
            f"  at {args.users} users per arm: power {at['power_fixed']:.3f} fixed,"
            f" {at['power_sequential']:.3f} sequential; sequential MDE {at['mde_sequential']:+.4f}"
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``marquee monitor`` argument parser."""
    p = argparse.ArgumentParser(prog="marquee monitor", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("analyze", help="evaluate a saved experiment and print the decision")
    a.add_argument("--config", required=True, help="the experiment YAML")
    a.add_argument("--lines", action="append", help="file of stream/exposure lines (repeat)")
    a.add_argument("--store", action="append", help="event store folder (repeat)")
    a.add_argument(
        "--lookback-s",
        type=float,
        default=7 * 86_400,
        help="pre-experiment window of the CUPED covariate (s)",
    )
    a.add_argument("--json", action="store_true", help="one JSON document")
    a.set_defaults(func=_analyze)
    r = sub.add_parser("run", help="the live monitor: evaluate, decide, act, serve the page")
    r.add_argument("--config", help="experiment YAML (MARQUEE_MONITOR_CONFIG_PATH)")
    r.add_argument("--store", action="append", help="event store folder (repeat)")
    r.add_argument("--db", help="history database URL (MARQUEE_MONITOR_DB_URL)")
    r.add_argument("--registry", help="model registry folder")
    r.add_argument("--dry-run", action="store_true", help="only report and record")
    r.add_argument("--host", help="page/API/metrics address")
    r.add_argument("--port", type=int, help="page/API/metrics port")
    r.add_argument("--interval", type=float, help="seconds between steps")
    r.add_argument("--lateness", type=float, help="allowed lateness (s of event time)")
    r.add_argument("--checkpoint-dir", help="folder of the evaluation checkpoints")
    r.set_defaults(func=_run)
    m = sub.add_parser("migrate", help="create or upgrade the history tables")
    m.add_argument("--db", required=True, help="SQLAlchemy URL")
    m.set_defaults(func=_migrate)
    pl = sub.add_parser(
        "plan",
        help="users per arm (policy.max_users) for a conversion effect: fixed and sequential",
    )
    pl.add_argument("--control", type=float, required=True, help="control's conversion rate")
    pl.add_argument("--treatment", type=float, required=True, help="the rate to detect")
    pl.add_argument("--config", help="experiment YAML: alpha and mixture_sd from its policy")
    pl.add_argument("--alpha", type=float, help="two-sided level (default: the policy's)")
    pl.add_argument("--mixture-sd", type=float, help="mSPRT spread (default: the policy's)")
    pl.add_argument("--power", type=float, default=0.8, help="target power")
    looks = pl.add_mutually_exclusive_group()
    looks.add_argument("--looks", type=int, help="equally spaced looks (default: continuous)")
    looks.add_argument("--look-every", type=float, help="users per arm between looks")
    pl.add_argument("--users", type=int, help="also: power and sequential MDE at this n")
    pl.add_argument("--paths", type=int, default=20_000, help="Monte Carlo paths")
    pl.add_argument("--seed", type=int, default=0, help="Monte Carlo seed")
    pl.add_argument("--json", action="store_true", help="one JSON document")
    pl.set_defaults(func=_plan)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``marquee monitor``."""
    args = build_parser().parse_args(argv)
    return int(args.func(args))
