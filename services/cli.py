"""The ``marquee`` command: one subcommand per service, each loaded only when used.

Each service owns ``services/<name>/cli.py`` with ``main(argv) -> int``; this module only
dispatches, so ``marquee serve`` never imports the trainer's dependencies.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Sequence

COMMANDS: dict[str, tuple[str, str]] = {
    "sim": ("services.simulator.cli", "the streaming world: users, movies, the event stream, APIs"),
    "ingest": ("services.ingest.cli", "consume the stream into the event store; build snapshots"),
    "train": ("services.trainer.cli", "train, evaluate and register models"),
    "registry": ("services.trainer.registry_cli", "list, show, promote and roll back models"),
    "serve": ("services.recommender.cli", "the recommendation server"),
    "route": ("services.router.cli", "the traffic router between model versions"),
    "monitor": ("services.monitor.cli", "online evaluation, experiments and detectors"),
    "events": ("services.common.cli", "parse and count stream lines from a file or Kafka"),
}


def _available() -> dict[str, tuple[str, str]]:
    found = {}
    for name, (module, help_text) in COMMANDS.items():
        try:
            present = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:  # the service's package itself is not there (yet)
            present = False
        if present:
            found[name] = (module, help_text)
    return found


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``marquee`` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    available = _available()
    if not args or args[0] in ("-h", "--help"):
        print("usage: marquee <command> [options]\n\ncommands:")
        for name, (_, help_text) in available.items():
            print(f"  {name:<10} {help_text}")
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in available:
        print(f"marquee: unknown command {name!r}; try 'marquee --help'", file=sys.stderr)
        return 2
    module = importlib.import_module(available[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
