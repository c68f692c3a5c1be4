"""``marquee registry list|show|promote|rollback``: inspect versions, move channels."""

from __future__ import annotations

import argparse
import json
import sys


def _parser() -> argparse.ArgumentParser:
    """The ``marquee registry`` argument parser."""
    ap = argparse.ArgumentParser(prog="marquee registry", description=__doc__)
    ap.add_argument(
        "--root", help="registry root (default: MARQUEE_TRAINER_REGISTRY_ROOT or models/)"
    )
    sub = ap.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("list", help="models, their versions and channels")
    ls.add_argument("name", nargs="?", help="only this model")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    show = sub.add_parser("show", help="the manifest of one version (or channel)")
    show.add_argument("name")
    show.add_argument(
        "ref", nargs="?", default="stable", help="version or channel (default stable)"
    )
    promote = sub.add_parser(
        "promote", help="point a channel (default stable) at a version (default: canary's)"
    )
    promote.add_argument("name")
    promote.add_argument("version", nargs="?")
    promote.add_argument("--to", default="stable", choices=["stable", "canary"])
    rollback = sub.add_parser("rollback", help="point a channel back at its previous version")
    rollback.add_argument("name")
    rollback.add_argument("--channel", default="stable", choices=["stable", "canary"])
    return ap


def main(argv: list[str]) -> int:
    """Entry point; exit 0 on success, 2 on bad usage, 5 when the registry refuses."""
    from services.common.artifacts import CHANNELS, ArtifactError, Registry
    from services.trainer.settings import TrainerSettings

    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    registry = Registry(args.root or TrainerSettings().registry_root)
    try:
        if args.command == "list":
            names = [args.name] if args.name else registry.names()
            doc = {}
            for name in names:
                channels = {c: registry.channel(name, c) for c in CHANNELS}
                doc[name] = [
                    {
                        "version": m.version,
                        "family": m.family,
                        "created": m.created,
                        "snapshot": str(m.snapshot.get("content_hash", ""))[:12],
                        "channels": [c for c, v in channels.items() if v == m.version],
                        "ndcg@20": m.metrics.get("test", {}).get("ranking", {}).get("ndcg@20"),
                        "rmse": m.metrics.get("test", {}).get("rating", {}).get("rmse"),
                    }
                    for m in registry.versions(name)
                ]
            if args.json:
                print(json.dumps(doc, indent=2))
            else:
                for name, versions in doc.items():
                    print(name)
                    for v in versions:
                        tags = ",".join(v["channels"]) or "-"
                        print(
                            f"  {v['version']}  {v['created']:<25}  snapshot {v['snapshot']:<12}  "
                            f"ndcg@20 {v['ndcg@20']}  rmse {v['rmse']}  [{tags}]"
                        )
            return 0
        if args.command == "show":
            from services.common.artifacts import read_manifest

            print(read_manifest(registry.resolve(args.name, args.ref)).to_json(), end="")
            return 0
        if args.command == "promote":
            version = registry.promote(args.name, args.version, args.to)
            print(json.dumps({"name": args.name, "channel": args.to, "version": version}))
            return 0
        if args.command == "rollback":
            version = registry.rollback(args.name, args.channel)
            print(json.dumps({"name": args.name, "channel": args.channel, "version": version}))
            return 0
    except ArtifactError as exc:
        print(f"marquee registry: {exc}", file=sys.stderr)
        return 5
    return 2
