"""What every ``marquee`` command shares: one-line errors, documented exit codes, common options.

A command raises ``CliError`` (or lets a missing file, bad YAML or a settings error escape) and
``run_cli`` prints ``marquee <command>: error: <cause>; <fix>`` on stderr, one line, and returns
the exit code.  Parsers built with ``Parser`` report usage errors the same way.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import Final, NoReturn

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_NOT_FOUND: Final = 3
EXIT_BAD_DATA: Final = 4
EXIT_REFUSED: Final = 5
EXIT_INTERRUPTED: Final = 130

EXIT_CODES_HELP: Final = """\
exit codes (every command):
  0  done
  1  failed while running (a peer unreachable, an I/O error, a bug)
  2  bad usage or input: an unknown flag, a bad value, a malformed file, a misconfiguration
  3  not found: a file, folder, store, snapshot, registry, model, version or user
  4  bad data: nothing to train on, leakage between periods
  5  refused: the registry will not do it (nothing to roll back to, an empty channel,
     a checksum or signature that does not match)
  130 interrupted (Ctrl-C)
Errors are one line on stderr: 'marquee <command>: error: <cause>; <fix>'.
Set MARQUEE_DEBUG=1 to get the traceback instead."""


class CliError(Exception):
    """A failure a user can fix: printed as one line with its cause and fix, then exit."""

    def __init__(self, cause: str, fix: str = "", exit_code: int = EXIT_USAGE) -> None:
        super().__init__(cause)
        self.cause = cause
        self.fix = fix
        self.exit_code = exit_code

    def line(self, prog: str) -> str:
        """``<prog>: error: <cause>; <fix>`` on one line."""
        text = f"{self.cause}; {self.fix}" if self.fix else self.cause
        return f"{prog}: error: {one_line(text)}"


def not_found(cause: str, fix: str = "") -> CliError:
    """A ``CliError`` for something named that does not exist (exit 3)."""
    return CliError(cause, fix, EXIT_NOT_FOUND)


def one_line(text: str) -> str:
    """``text`` with every run of whitespace (newlines too) made one space."""
    return " ".join(str(text).split())


def validation_message(exc: Exception, flags: dict[str, str] | None = None) -> str:
    """A pydantic ``ValidationError`` as one line: ``field (--flag): problem; ...``."""
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return one_line(str(exc))
    by_field = {v: k for k, v in (flags or {}).items()}
    parts = []
    for err in errors():
        field = ".".join(str(p) for p in err.get("loc", ()))
        flag = by_field.get(field)
        where = f"{field} (--{flag.replace('_', '-')})" if flag else field
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        got = err.get("input")
        shown = "" if isinstance(got, dict) or got is None else f", got {got!r}"
        parts.append(f"{where}: {msg}{shown}" if where else msg)
    return "; ".join(parts)


def yaml_message(exc: Exception) -> str:
    """A PyYAML parse error as one line: the problem and where it is."""
    problem = getattr(exc, "problem", None) or getattr(exc, "context", None) or str(exc)
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    name = (
        f"{mark.name}: " if mark is not None and mark.name not in (None, "<unicode string>") else ""
    )
    return one_line(f"{name}invalid YAML{where}: {problem}")


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line (no usage dump) and exit 2."""

    def error(self, message: str) -> NoReturn:
        """Print ``<prog>: error: <message>; see '<prog> --help'`` and exit 2."""
        self.exit(
            EXIT_USAGE, f"{self.prog}: error: {one_line(message)}; see '{self.prog} --help'\n"
        )


def add_registry_option(parser: argparse.ArgumentParser, env: str) -> None:
    """``--registry DIR`` (alias ``--root``), accepted before or after a subcommand."""
    # SUPPRESS: a subcommand's copy must not overwrite a value given before the subcommand.
    parser.add_argument(
        "--registry",
        "--root",
        dest="registry",
        metavar="DIR",
        default=argparse.SUPPRESS,
        help=f"model registry root (default: {env} or models/); --root is a deprecated alias",
    )


def add_json_option(parser: argparse.ArgumentParser) -> None:
    """``--json``: print machine-readable JSON instead of the human table."""
    parser.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print machine-readable JSON instead of a table",
    )


def flag(args: argparse.Namespace, name: str, default: object = None) -> object:
    """The value of an option added with a SUPPRESS default, or ``default`` when not given."""
    return getattr(args, name, default)


def _os_error_line(exc: OSError) -> tuple[str, int]:
    what = exc.filename if exc.filename is not None else ""
    if isinstance(exc, FileNotFoundError):
        return f"no such file or folder: {what}; check the path", EXIT_NOT_FOUND
    reason = exc.strerror or type(exc).__name__
    return (f"{reason}: {what}" if what else reason), EXIT_FAILED


def run_cli(prog: str, main: Callable[[], int | None]) -> int:
    """Run ``main`` and turn what a user can fix into one line on stderr and its exit code.

    Unexpected exceptions (bugs) still propagate with their traceback.
    """
    debug = bool(os.environ.get("MARQUEE_DEBUG"))
    try:
        return int(main() or 0)
    except SystemExit as exc:  # argparse (--help, a usage error already printed)
        if exc.code is None or isinstance(exc.code, int):
            return int(exc.code or 0)
        print(f"{prog}: error: {one_line(str(exc.code))}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except CliError as exc:
        if debug:
            raise
        print(exc.line(prog), file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:
        # The reader went away (``| head``): not an error, and nothing more can be written.
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except OSError as exc:
        if debug:
            raise
        text, code = _os_error_line(exc)
        print(f"{prog}: error: {one_line(text)}", file=sys.stderr)
        return code
    except ValueError as exc:  # bad input: pydantic's ValidationError and yaml's are ValueErrors
        if debug:
            raise
        if type(exc).__module__.startswith("pydantic"):
            text = f"invalid settings: {validation_message(exc)}"
        else:
            text = one_line(str(exc)) or type(exc).__name__
        print(f"{prog}: error: {text}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:
        if debug or not type(exc).__module__.startswith("yaml"):
            raise
        print(f"{prog}: error: {yaml_message(exc)}", file=sys.stderr)
        return EXIT_USAGE


def command_name(parser: argparse.ArgumentParser, argv: Sequence[str]) -> str:
    """``prog`` plus the subcommand in ``argv`` when there is one (for error prefixes)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for arg in argv:
                if arg in action.choices:
                    return f"{parser.prog} {arg}"
    return parser.prog
