"""The ``marquee`` command: one subcommand per service, each loaded only when used.

Each service owns ``services/<name>/cli.py`` with ``main(argv) -> int``; this module only
dispatches, so ``marquee serve`` never imports the trainer's dependencies.  The conventions
every subcommand keeps (one-line errors, exit codes, ``--registry``, ``--json``) live in
``services.common.cliutil``.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Sequence

from services.common.cliutil import EXIT_CODES_HELP, EXIT_USAGE, run_cli

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


def version() -> str:
    """The installed package's version (the source tree's when it is not installed)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("marquee")
    except PackageNotFoundError:  # pragma: no cover  (run from a bare checkout)
        return "0+unknown"


def usage(available: dict[str, tuple[str, str]]) -> str:
    """The top-level help: commands, then the exit codes every command shares."""
    lines = ["usage: marquee [--version] <command> [options]", "", "commands:"]
    lines += [f"  {name:<10} {help_text}" for name, (_, help_text) in available.items()]
    lines += ["", "'marquee <command> --help' describes a command and its options.", ""]
    return "\n".join([*lines, EXIT_CODES_HELP])


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``marquee`` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    available = _available()
    if not args or args[0] in ("-h", "--help"):
        print(usage(available), file=sys.stdout if args else sys.stderr)
        return 0 if args else EXIT_USAGE
    if args[0] in ("-V", "--version"):
        print(f"marquee {version()}")
        return 0
    name, rest = args[0], args[1:]
    if name not in available:
        print(
            f"marquee: error: unknown command {name!r}; choose from {', '.join(available)} "
            "or see 'marquee --help'",
            file=sys.stderr,
        )
        return EXIT_USAGE
    module = importlib.import_module(available[name][0])
    # The commands use run_cli themselves; this is the net for any that does not.
    return run_cli(f"marquee {name}", lambda: module.main(rest))


if __name__ == "__main__":
    sys.exit(main())
