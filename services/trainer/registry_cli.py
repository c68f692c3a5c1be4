"""``marquee registry list|show|promote|rollback``: inspect versions, move channels.

    marquee registry list                                  # every model, its versions, channels
    marquee registry show svd canary                       # one manifest (JSON)
    marquee registry promote svd --channel stable          # stable := what canary points at
    marquee registry rollback svd --channel stable         # stable := its previous version

--registry DIR (default MARQUEE_TRAINER_REGISTRY_ROOT, else models/) may come before or after
the subcommand; --root and --to are deprecated aliases of --registry and --channel.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from services.common.cliutil import (
    EXIT_CODES_HELP,
    EXIT_REFUSED,
    CliError,
    Parser,
    add_json_option,
    add_registry_option,
    not_found,
    run_cli,
)

PROG = "marquee registry"
ENV = "MARQUEE_TRAINER_REGISTRY_ROOT"


def _channel_option(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--channel",
        "--to",
        dest="channel",
        default="stable",
        choices=["stable", "canary"],
        help=f"the channel to {what} (default stable); --to is a deprecated alias",
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``marquee registry`` argument parser."""
    ap = Parser(
        prog=PROG,
        description=__doc__,
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_registry_option(ap, ENV)
    common = Parser(add_help=False)
    add_registry_option(common, ENV)
    sub = ap.add_subparsers(dest="command", required=True, metavar="{list,show,promote,rollback}")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_text, description=help_text, parents=[common])

    ls = command("list", "models, their versions, offline metrics and channels")
    ls.add_argument("name", nargs="?", help="only this model")
    add_json_option(ls)
    show = command("show", "the manifest of one version or channel (JSON)")
    show.add_argument("name", help="model name, e.g. svd")
    show.add_argument(
        "ref", nargs="?", default="stable", help="version or channel (default stable)"
    )
    promote = command(
        "promote", "point a channel (default stable) at a version (default: canary's)"
    )
    promote.add_argument("name", help="model name, e.g. svd")
    promote.add_argument("version", nargs="?", help="version to promote (default: canary's)")
    _channel_option(promote, "point at the version")
    rollback = command("rollback", "point a channel back at its previous version")
    rollback.add_argument("name", help="model name, e.g. svd")
    _channel_option(rollback, "roll back")
    return ap


def _metric(m: Any, period: str, group: str, name: str) -> float | None:
    value = m.metrics.get(period, {}).get(group, {}).get(name)
    return None if value is None else float(value)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _open(args: argparse.Namespace) -> Any:
    """The registry the flags or the environment name; exit 3 when its folder is missing."""
    from services.common.artifacts import Registry
    from services.trainer.settings import TrainerSettings

    root = getattr(args, "registry", None) or TrainerSettings().registry_root
    registry = Registry(root)
    if not registry.root.is_dir():
        raise not_found(
            f"no model registry at {registry.root.resolve()}",
            f"pass --registry DIR or set {ENV} (`marquee train --register canary` creates one)",
        )
    return registry


def _model(registry: Any, name: str) -> None:
    """Exit 3 naming the models there are when ``name`` is not one of them."""
    from services.common.artifacts import ArtifactError

    try:
        known = name in registry.names() and bool(registry.versions(name))
    except ArtifactError:  # a name that cannot be a model (a slash, a dot)
        known = False
    if not known:
        names = registry.names()
        raise not_found(
            f"no such model {name!r} in registry {registry.root.resolve()}",
            f"it has {', '.join(names)}" if names else "it has no models yet",
        )


def _version(registry: Any, name: str, version: str) -> None:
    if not (registry.path(name, version) / "manifest.json").is_file():
        versions = [m.version for m in registry.versions(name)]
        raise not_found(
            f"model {name!r} has no version {version!r}",
            f"its versions are {', '.join(versions)} (see `{PROG} list {name}`)",
        )


def _list(registry: Any, args: argparse.Namespace) -> int:
    from services.common.artifacts import CHANNELS

    if args.name:
        _model(registry, args.name)
    names = [args.name] if args.name else registry.names()
    doc: dict[str, list[dict[str, Any]]] = {}
    for name in names:
        channels = {c: registry.channel(name, c) for c in CHANNELS}
        doc[name] = [
            {
                "version": m.version,
                "family": m.family,
                "created": m.created,
                "snapshot": str(m.snapshot.get("content_hash", ""))[:12],
                "channels": [c for c, v in channels.items() if v == m.version],
                "val_ndcg@20": _metric(m, "val", "ranking", "ndcg@20"),
                "ndcg@20": _metric(m, "test", "ranking", "ndcg@20"),
                "rmse": _metric(m, "test", "rating", "rmse"),
            }
            for m in registry.versions(name)
        ]
    if getattr(args, "json", False):
        print(json.dumps(doc, indent=2))
        return 0
    if not doc:
        print(f"{PROG}: no models in {registry.root.resolve()} yet", file=sys.stderr)
        return 0
    print(
        f"{'model':<12} {'version':<16} {'created':<25} {'snapshot':<12} "
        f"{'val ndcg@20':>11} {'ndcg@20':>8} {'rmse':>7}  channels"
    )
    for name, versions in doc.items():
        for v in versions:
            print(
                f"{name:<12} {v['version']:<16} {v['created']:<25} {v['snapshot'] or '-':<12} "
                f"{_fmt(v['val_ndcg@20']):>11} {_fmt(v['ndcg@20']):>8} {_fmt(v['rmse']):>7}  "
                f"{','.join(v['channels']) or '-'}"
            )
    return 0


def _main(argv: list[str]) -> int:
    from services.common.artifacts import CHANNELS, ArtifactError, read_manifest

    args = build_parser().parse_args(argv)
    registry = _open(args)
    try:
        if args.command == "list":
            return _list(registry, args)
        _model(registry, args.name)
        if args.command == "show":
            if args.ref not in CHANNELS:
                _version(registry, args.name, args.ref)
            elif registry.channel(args.name, args.ref) is None:
                raise CliError(
                    f"model {args.name!r} has no {args.ref!r} version yet",
                    f"promote one: `{PROG} promote {args.name} VERSION --channel {args.ref}`",
                    EXIT_REFUSED,
                )
            print(read_manifest(registry.resolve(args.name, args.ref)).to_json(), end="")
            return 0
        if args.command == "promote":
            if args.version:
                _version(registry, args.name, args.version)
            version = registry.promote(args.name, args.version, args.channel)
            print(json.dumps({"name": args.name, "channel": args.channel, "version": version}))
            return 0
        version = registry.rollback(args.name, args.channel)
        print(json.dumps({"name": args.name, "channel": args.channel, "version": version}))
        return 0
    except ArtifactError as exc:
        raise CliError(str(exc), f"see `{PROG} list {args.name}`", EXIT_REFUSED) from exc


def main(argv: list[str]) -> int:
    """Entry point; the exit codes are ``services.common.cliutil``'s (5: the registry refuses)."""
    return run_cli(PROG, lambda: _main(argv))
