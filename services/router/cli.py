"""``marquee route``: serve the router, check an experiment file, print users' arms.

marquee route serve --config experiment.yaml --kafka 127.0.0.1:19092
marquee route check experiment.yaml
marquee route assign --config experiment.yaml 1 2 3
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from pathlib import Path

CONF = Path(__file__).resolve().parent / "gunicorn_conf.py"
_FLAGS = {
    "config": "config_path",
    "bind": "bind",
    "workers": "workers",
    "kafka": "kafka_bootstrap_servers",
    "metrics_dir": "metrics_dir",
}


def _parser() -> argparse.ArgumentParser:
    from services.common.cliutil import Parser

    ap = Parser(prog="marquee route", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True, parser_class=Parser)
    serve = sub.add_parser("serve", help="run the router under gunicorn (or --dev)")
    serve.add_argument("--config", help="experiment YAML (MARQUEE_ROUTER_CONFIG_PATH)")
    serve.add_argument("--bind", help="host:port to listen on (default 127.0.0.1:8082)")
    serve.add_argument("--workers", type=int, help="gunicorn worker processes")
    serve.add_argument("--kafka", help="Kafka bootstrap servers for the exposure log")
    serve.add_argument("--metrics-dir", help="prometheus multiprocess folder")
    serve.add_argument(
        "--dev", action="store_true", help="one process, no gunicorn (loopback binds only)"
    )
    check = sub.add_parser("check", help="validate an experiment file offline")
    check.add_argument("file", help="experiment YAML")
    assign = sub.add_parser("assign", help="print each user's arm under an experiment file")
    assign.add_argument("--config", required=True, help="experiment YAML")
    assign.add_argument("users", nargs="+", help="user ids, or a range like 1-100000")
    assign.add_argument("--summary", action="store_true", help="print only counts per arm")
    return ap


def _users(specs: list[str]) -> list[int]:
    from services.common.service import parse_user_id

    out: list[int] = []
    for spec in specs:
        lo, sep, hi = spec.partition("-")
        if sep and lo and hi:
            out.extend(range(parse_user_id(lo), parse_user_id(hi) + 1))
        else:
            out.append(parse_user_id(spec))
    return out


def cmd_check(args: argparse.Namespace) -> int:
    """Validate a file; exit 0 and a one-line summary, or 2 and one line per mistake."""
    from services.router.config import ConfigError, load_config

    try:
        cfg = load_config(args.file)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    arms = ", ".join(f"{a.name}={a.weight:g}%" for a in cfg.arms)
    shadow = f", shadow {cfg.shadow.share:g}" if cfg.shadow else ""
    print(
        f"ok: experiment {cfg.experiment} ({cfg.mode}, {cfg.status}), exposure {cfg.exposure:g},"
        f" control {cfg.control}, arms {arms}{shadow}, {len(cfg.fallback)} fallback ids"
    )
    return 0


def cmd_assign(args: argparse.Namespace) -> int:
    """Print ``<user> <arm label> <arms asked>`` per user, or counts per label."""
    from services.common.service import InvalidUserIdError
    from services.router.assignment import Assigner
    from services.router.config import ConfigError, load_config

    try:
        assigner = Assigner(load_config(args.config))
        users = _users(args.users)
    except (ConfigError, InvalidUserIdError) as exc:
        print(f"marquee route assign: {exc}", file=sys.stderr)
        return 2
    counts: Counter[str] = Counter()
    for user in users:
        a = assigner.assign(user)
        counts[a.label] += 1
        if not args.summary:
            print(f"{user} {a.label} {'+'.join(a.arms)}")
    if args.summary:
        print(json.dumps(dict(sorted(counts.items()))))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Validate settings and the experiment file, then exec gunicorn (or run ``--dev``)."""
    from pydantic import ValidationError

    from services.common.cliutil import EXIT_USAGE, CliError, validation_message
    from services.common.runtime import (
        is_loopback,
        pin_blas_threads,
        settings_from_flags,
        split_bind,
    )
    from services.router.config import ConfigError, load_config
    from services.router.settings import RouterSettings

    try:
        settings = settings_from_flags(RouterSettings, args, _FLAGS, export=True)
        load_config(settings.config_path)
    except ValidationError as exc:
        raise CliError(
            f"invalid settings: {validation_message(exc, _FLAGS)}",
            "see 'marquee route serve --help'",
        ) from None
    except ConfigError as exc:
        # one line per mistake in the file: a user fixes them all at once
        print(f"marquee route serve: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        host, _ = split_bind(settings.bind)
    except ValueError as exc:
        raise CliError(str(exc), "give --bind host:port", EXIT_USAGE) from None
    if args.dev and not is_loopback(host):
        # One process without gunicorn's supervision is for a developer's machine only.
        raise CliError(f"--dev serves on loopback only, not {host}", "drop --dev", EXIT_USAGE)
    pin_blas_threads()
    if args.dev:
        return _run_dev(settings)
    sys.stdout.flush()
    sys.stderr.flush()
    # exec, not a child: gunicorn's master gets the signals (SIGTERM from Kubernetes) directly.
    argv = [sys.executable, "-m", "gunicorn", "-c", str(CONF)]
    os.execv(sys.executable, argv)  # noqa: S606  (fixed argv, no shell)
    return 0  # pragma: no cover  (execv does not return)


def _run_dev(settings: object) -> int:
    from services.common.logging import configure_logging
    from services.common.runtime import split_bind
    from services.router.app import create_app, runtime_of
    from services.router.settings import RouterSettings

    assert isinstance(settings, RouterSettings)
    configure_logging(settings.log_level, settings.log_json)
    from aiohttp import web

    app = create_app(settings)
    runtime_of(app).start()
    host, port = split_bind(settings.bind)
    try:
        web.run_app(app, host=host, port=port, access_log=None, print=None)
    finally:
        runtime_of(app).stop()
    return 0


def main(argv: list[str]) -> int:
    """Entry point of ``marquee route``."""
    args = _parser().parse_args(argv)
    commands = {"serve": cmd_serve, "check": cmd_check, "assign": cmd_assign}
    return commands[args.command](args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
