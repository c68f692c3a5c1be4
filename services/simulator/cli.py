"""``marquee sim``: the streaming world from the command line.

    marquee sim backfill --days 1 --out .run/sim/stream.log           # to a file, fast
    marquee sim backfill --days 1 --kafka 127.0.0.1:19092             # to Kafka (movielog)
    marquee sim live --target http://127.0.0.1:8082 --kafka 127.0.0.1:19092
    marquee sim api --port 8080                                       # /user/<id>, /movie/<id>
    marquee sim truth --run-dir .run/sim --user 42 -k 20              # the oracle's answer
    marquee sim evaluate .run/sim/stream.log                          # judge a saved stream

Every flag has a ``MARQUEE_SIM_*`` environment twin (see settings.py); flags win.
"""

from __future__ import annotations

from services.common.runtime import pin_blas_threads, settings_from_flags

# One BLAS thread: the engine's matrix products are small and the cores are shared.
pin_blas_threads()

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import TYPE_CHECKING, Any  # noqa: E402

from services.common.cliutil import (  # noqa: E402
    EXIT_CODES_HELP,
    CliError,
    Parser,
    add_json_option,
    not_found,
    run_cli,
    validation_message,
)
from services.common.logging import configure_logging  # noqa: E402
from services.simulator.scenarios import MALFORMED_KINDS, Scenario  # noqa: E402
from services.simulator.settings import SimulatorSettings  # noqa: E402

if TYPE_CHECKING:
    from services.simulator.report import OnlineReport

log = logging.getLogger("services.simulator")

# CLI flag -> settings field (flags left unset keep the environment's value).
_SETTING_FLAGS = {
    "seed": "seed",
    "users": "n_users",
    "movies": "n_movies",
    "new_user_capacity": "new_user_capacity",
    "catalog": "catalog",
    "run_dir": "run_dir",
    "kafka": "kafka_bootstrap_servers",
    "topic": "topic",
    "target": "target",
    "reco_share": "reco_share",
    "reco_host": "reco_host",
    "start": "start",
    "rate": "live_rate",
    "speed": "speed",
    "sessions_per_day": "sessions_per_user_day",
    "new_accounts_per_day": "new_accounts_per_day",
    "scenario": "scenario",
    "rate_limit": "api_rate_limit",
    "host": "host",
    "port": "port",
}
_SCENARIO_FLAGS = (
    "malformed_rate",
    "duplicate_rate",
    "late_rate",
    "api_error_rate",
    "api_slow_rate",
    "drift_at_hours",
    "cold_start_at_hours",
    "cold_start_users",
    "spam_at_hours",
    "spam_accounts",
    "spam_movie",
    "feedback_loop",
)


def _world_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("world")
    g.add_argument("--seed", type=int, help="random seed (default 42)")
    g.add_argument("--users", type=int, help="users at the start (default 1,000,000)")
    g.add_argument(
        "--movies", type=int, help="movies in the catalog (27,000; 1,682 with a movielens catalog)"
    )
    g.add_argument("--new-user-capacity", type=int, help="accounts reserved for new users")
    g.add_argument("--catalog", help="synthetic (default) or movielens:<ml-100k dir>")
    g.add_argument("--scenario", help="scenario file (YAML or JSON) of injections")


def _stream_flags(p: argparse.ArgumentParser) -> None:
    _world_flags(p)
    g = p.add_argument_group("stream")
    g.add_argument("--out", help="write lines to this file ('-' = stdout) instead of Kafka")
    g.add_argument("--kafka", metavar="HOST:PORT", help="Kafka bootstrap servers")
    g.add_argument("--topic", help="Kafka topic (default movielog)")
    g.add_argument(
        "--kafka-mode",
        choices=["fast", "producer"],
        default="fast",
        help="fast: batch-encoded produce requests; producer: plain KafkaProducer",
    )
    g.add_argument("--run-dir", help="run folder; ground truth goes to <run-dir>/truth")
    g.add_argument("--no-truth", action="store_true", help="write no ground truth")
    g.add_argument("--target", help="recommender URL or builtin:<oracle|popularity|random>")
    g.add_argument("--reco-share", type=float, help="share of sessions that ask (default 0.2)")
    g.add_argument("--reco-host", help="host:port written in recommendation lines")
    g.add_argument("--sessions-per-day", type=float, help="mean sessions per user per day")
    g.add_argument("--new-accounts-per-day", type=float, help="new accounts per day")
    g.add_argument("--max-events", type=int, help="stop after this many lines")
    s = p.add_argument_group("scenario injections (all off by default)")
    s.add_argument("--malformed-rate", type=float, help="malformed lines per valid line")
    s.add_argument(
        "--malformed-kinds", help=f"comma-separated subset of {','.join(MALFORMED_KINDS)}"
    )
    s.add_argument("--duplicate-rate", type=float, help="duplicated lines per line")
    s.add_argument("--late-rate", type=float, help="share of events emitted late")
    s.add_argument("--drift-at-hours", type=float, help="taste drift this many hours in")
    s.add_argument("--cold-start-at-hours", type=float, help="burst of new users at this hour")
    s.add_argument("--cold-start-users", type=int, help="users in the cold-start burst")
    s.add_argument("--spam-at-hours", type=float, help="rating-spam ring starts at this hour")
    s.add_argument("--spam-accounts", type=int, help="accounts in the spam ring")
    s.add_argument("--spam-movie", help="movie id the ring pushes (default: an obscure one)")
    s.add_argument("--feedback-loop", type=float, help="popularity feedback strength (0 = off)")


def build_parser() -> argparse.ArgumentParser:
    """The ``marquee sim`` argument parser."""
    ap = Parser(
        prog="marquee sim",
        description=__doc__,
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawTextHelpFormatter,
    )
    common = Parser(add_help=False)
    for p in (ap, common):  # before or after the subcommand
        p.add_argument("--log-level", default=argparse.SUPPRESS, help="DEBUG, INFO, WARNING, ERROR")
    sub = ap.add_subparsers(
        dest="command", required=True, metavar="{backfill,live,api,evaluate,truth}"
    )

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_text, description=help_text, parents=[common])

    b = command("backfill", "simulate N days as fast as possible")
    b.add_argument("--days", type=float, required=True, help="simulated days")
    b.add_argument("--start", help="simulated start, e.g. 2026-03-02T00:00:00")
    _stream_flags(b)

    lv = command("live", "stream paced to the wall clock, calling the recommender")
    lv.add_argument("--rate", type=float, help="at most this many lines per second (1000)")
    lv.add_argument("--speed", type=float, help="simulated seconds per wall second (1.0)")
    lv.add_argument("--duration", type=float, help="stop after this many wall seconds")
    lv.add_argument(
        "--warmup-hours",
        type=float,
        default=3.0,
        help="simulate this much silently first, so sessions are in progress (3)",
    )
    lv.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="go on from the run a backfill wrote there: its accounts open, its users"
        " remembering what they finished (the same world flags)",
    )
    _stream_flags(lv)

    a = command("api", "serve the user and movie APIs")
    _world_flags(a)
    a.add_argument("--host", help="bind address (default 127.0.0.1; 0.0.0.0 in a container)")
    a.add_argument("--port", type=int, help="port (default 8080)")
    a.add_argument("--rate-limit", type=float, help="requests/s per client (0 = unlimited)")
    a.add_argument("--threads", type=int, default=8, help="gunicorn threads")

    ev = command(
        "evaluate", "judge the recommender of a saved stream: calls, latency, 15-minute watch rate"
    )
    ev.add_argument("file", help="stream file (one line per event, as --out writes; - = stdin)")
    add_json_option(ev)

    t = command("truth", "read a run's ground truth: a user's true top-k movie ids")
    t.add_argument("--run-dir", required=True, help="the run folder backfill/live wrote")
    t.add_argument("--user", type=int, required=True, help="user id (1 .. the world's users)")
    t.add_argument("-k", type=int, default=20, help="how many movies (default 20)")
    return ap


_parser = build_parser  # the name older tests use


def settings_from(args: argparse.Namespace) -> SimulatorSettings:
    """Environment settings overridden by the flags that were given."""
    return settings_from_flags(SimulatorSettings, args, _SETTING_FLAGS)


def scenario_from(args: argparse.Namespace, settings: SimulatorSettings) -> Scenario:
    """The scenario file (if any) overridden by scenario flags."""
    if settings.scenario and not Path(settings.scenario).is_file():
        raise not_found(
            f"no scenario file {settings.scenario}", "check --scenario or MARQUEE_SIM_SCENARIO"
        )
    sc = Scenario.load(settings.scenario) if settings.scenario else Scenario()
    data = sc.to_json()
    for name in _SCENARIO_FLAGS:
        value = getattr(args, name, None)
        if value is not None:
            data[name] = value
    if getattr(args, "malformed_kinds", None):
        data["malformed_kinds"] = [k.strip() for k in args.malformed_kinds.split(",")]
    return Scenario.from_mapping(data)


def _stream(args: argparse.Namespace, settings: SimulatorSettings) -> int:
    from services.simulator import runner

    scenario = scenario_from(args, settings)
    run_dir = None if args.no_truth else settings.run_dir
    report: OnlineReport | None = None
    if args.command == "backfill":
        sink = runner.make_sink(settings, args.out, args.kafka_mode)
        sim = runner.build_simulation(settings, scenario)
        summary = runner.backfill(sim, sink, args.days, run_dir, max_lines=args.max_events)
    else:
        from services.simulator.report import OnlineTally

        if not settings.target:
            log.warning("no --target: the live stream will carry no recommendation requests")
        elif (problem := _unreachable(settings.target)) is not None:
            print(
                f"marquee sim live: warning: --target {settings.target} is unreachable now "
                f"({problem}); its calls are logged as errors",
                file=sys.stderr,
            )
        speed = settings.speed
        if speed is None:
            speed = runner.auto_speed(settings.n_users, settings.sessions_per_user_day)
            if speed > 1:
                print(
                    f"marquee sim live: {settings.n_users:,} users start few sessions at real "
                    f"time; simulating {speed:g}x real time (--speed to choose)",
                    file=sys.stderr,
                )
        tick = max(1.0, speed * 0.5)
        sink = runner.make_sink(settings, args.out, args.kafka_mode)
        warm = args.warmup_hours * 3600
        now = runner.now_start_ns()
        sim = runner.build_simulation(
            settings, scenario, now - int(warm * 1e9), tick_s=tick, scenario_origin_ns=now
        )
        if args.resume:
            try:
                sim.engine.resume(_state_file(args.resume))
            except ValueError as exc:
                raise CliError(str(exc), "resume with the world flags of that backfill") from None
        tally = OnlineTally()
        summary = runner.live(
            sim,
            sink,
            run_dir,
            settings.live_rate,
            speed,
            args.duration,
            args.max_events,
            warmup_s=warm,
            tally=tally,
        )
        report = tally.report()
        summary["online"] = report.to_json()
    keys = ("lines_total", "wall_seconds", "lines_per_second", "stats")
    brief = {k: summary[k] for k in keys if k in summary}
    log.info("run finished", extra={"summary": brief})
    print(json.dumps(brief), file=sys.stderr)
    if report is not None:
        print(report.text())
        if report.calls and report.errors.get("connection refused", 0) == report.calls:
            print(
                f"marquee sim live: none of {report.calls} recommendation calls reached "
                f"{settings.target} ({', '.join(report.errors)})",
                file=sys.stderr,
            )
            return 1
    return 0


def _unreachable(target: str) -> str | None:
    """Why a TCP connection to an http(s) target fails now (None: it connects, or a builtin)."""
    import socket
    from urllib.parse import urlsplit

    if not target.startswith(("http://", "https://")):
        return None
    parts = urlsplit(target)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "localhost", port), timeout=1.0):
            return None
    except OSError as exc:
        return exc.strerror or type(exc).__name__


def _evaluate(args: argparse.Namespace) -> int:
    from services.simulator.report import OnlineTally

    tally = OnlineTally()
    path = args.file
    if path != "-" and not Path(path).is_file():
        raise not_found(f"no stream file {path}", "pass a file `marquee sim ... --out` wrote")
    if path == "-":
        tally.add(sys.stdin.buffer)
    else:
        with open(path, "rb") as fh:
            # Chunks keep memory flat; recommendations come before watches within each.
            while chunk := fh.readlines(1 << 24):
                tally.add(chunk)
    report = tally.report()
    print(json.dumps(report.to_json()) if getattr(args, "json", False) else report.text())
    return 0


def _api(args: argparse.Namespace, settings: SimulatorSettings) -> int:
    from gunicorn.app.base import BaseApplication

    from services.simulator.app import create_app

    app = create_app(settings)  # the world is built once, before the server forks

    class _Server(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            self.cfg.set("bind", f"{settings.host}:{settings.port}")
            self.cfg.set("workers", 1)  # one process: the world and the rate limit live here
            self.cfg.set("worker_class", "gthread")
            self.cfg.set("threads", args.threads)
            self.cfg.set("accesslog", None)

        def load(self) -> Any:
            return app

    log.info("serving user/movie APIs", extra={"port": settings.port})
    _Server().run()
    return 0


def _state_file(run_dir: str) -> Path:
    """The state a backfill saved in ``run_dir``, or a clear error."""
    from services.simulator.engine import state_file

    path = state_file(run_dir)
    if not path.is_file():
        raise not_found(
            f"no saved state in {path.parent}",
            "pass --resume the --run-dir a `marquee sim backfill` run wrote (without --no-truth)",
        )
    return path


def _truth(args: argparse.Namespace) -> int:
    from services.simulator.world import GroundTruth

    folder = Path(args.run_dir) / "truth"
    if not (folder / "world.json").is_file():
        raise not_found(
            f"no ground truth in {folder}",
            "pass the --run-dir a `marquee sim backfill` or `live` run wrote (without --no-truth)",
        )
    truth = GroundTruth.load(folder)
    n_users = len(truth.user_factors)
    if not 1 <= args.user <= n_users:
        raise not_found(
            f"no user {args.user} in the world of {args.run_dir}",
            f"its users are 1 .. {n_users}",
        )
    if args.k < 1:
        raise CliError(f"-k must be at least 1, got {args.k}")
    print(",".join(truth.true_top_k(args.user, args.k)))
    return 0


def main(argv: list[str]) -> int:
    """Entry point of ``marquee sim``; exit codes as in ``services.common.cliutil``."""
    return run_cli("marquee sim", lambda: _main(argv))


def _main(argv: list[str]) -> int:
    from pydantic import ValidationError

    args = build_parser().parse_args(argv)
    try:
        settings = settings_from(args)
    except ValidationError as exc:
        raise CliError(
            f"invalid settings: {validation_message(exc, _SETTING_FLAGS)}",
            "fix the flag or its MARQUEE_SIM_* variable",
        ) from None
    configure_logging(
        getattr(args, "log_level", None) or settings.log_level, json=settings.log_json
    )
    try:
        if args.command in ("backfill", "live"):
            return _stream(args, settings)
        if args.command == "api":
            return _api(args, settings)
        if args.command == "evaluate":
            return _evaluate(args)
        return _truth(args)
    except KeyError as exc:  # an unknown name (a builtin target, a movie id)
        raise CliError(f"unknown {exc}", "see `marquee sim --help`") from None


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
