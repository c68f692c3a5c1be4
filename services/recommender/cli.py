"""``marquee serve``: run the recommendation server under gunicorn (or one dev process).

Options override the ``MARQUEE_RECOMMENDER_*`` environment, which gunicorn's config reads.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pydantic import ValidationError

from services.common.cliutil import (
    EXIT_CODES_HELP,
    CliError,
    Parser,
    not_found,
    run_cli,
    validation_message,
)
from services.common.runtime import is_loopback, pin_blas_threads, settings_from_flags, split_bind
from services.recommender.settings import RecommenderSettings

CONF = Path(__file__).resolve().parent / "gunicorn_conf.py"
# flag -> settings field; given flags are also exported, since gunicorn's config reads the env.
_FLAGS = {
    "registry": "registry_root",
    "model": "model_name",
    "ref": "model_ref",
    "bind": "bind",
    "workers": "workers",
    "threads": "threads",
    "users_api": "users_api_url",
    "poll_interval": "poll_interval_s",
    "metrics_dir": "metrics_dir",
    "wait": "wait_for_model",
}


def _parser() -> argparse.ArgumentParser:
    ap = Parser(
        prog="marquee serve",
        description=__doc__,
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--registry", help="model registry root (MARQUEE_RECOMMENDER_REGISTRY_ROOT)")
    ap.add_argument("--model", help="model name in the registry (MARQUEE_RECOMMENDER_MODEL_NAME)")
    ap.add_argument("--ref", help="channel (stable/canary) or pinned version to serve")
    ap.add_argument(
        "--bind",
        help="host:port to listen on (default 127.0.0.1:8082; 0.0.0.0:8082 in a container)",
    )
    ap.add_argument("--workers", type=int, help="gunicorn worker processes")
    ap.add_argument("--threads", type=int, help="threads per worker")
    ap.add_argument("--users-api", help="base URL of the user API for cold-start segments")
    ap.add_argument("--poll-interval", type=float, help="seconds between channel pointer checks")
    ap.add_argument("--metrics-dir", help="prometheus multiprocess folder")
    ap.add_argument(
        "--wait",
        action="store_true",
        default=None,
        help="start even if the model does not exist yet and answer 503 until it does",
    )
    ap.add_argument(
        "--dev",
        action="store_true",
        help="one process with Flask's development server, for local debugging (loopback only)",
    )
    return ap


def main(argv: list[str]) -> int:
    """Validate settings, then exec gunicorn with the repo's config (or run ``--dev``)."""
    return run_cli("marquee serve", lambda: _main(argv))


build_parser = _parser


def _main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    pin_blas_threads()  # before numpy loads (the model check below imports it)
    fix = "fix the flag or its MARQUEE_RECOMMENDER_* variable (see `marquee serve --help`)"
    try:
        settings = settings_from_flags(RecommenderSettings, args, _FLAGS, export=True)
    except ValidationError as exc:
        raise CliError(f"invalid settings: {validation_message(exc, _FLAGS)}", fix) from None
    try:
        host, _ = split_bind(settings.bind)
        settings.signing.key()  # a configured but unreadable key fails here, not in a worker
    except ValueError as exc:
        raise CliError(f"invalid settings: {exc}", fix) from None
    if not settings.wait_for_model:
        from services.common.artifacts import Registry
        from services.recommender.model import missing_model

        problem = missing_model(
            Registry(settings.registry_root), settings.model_name, settings.model_ref
        )
        if problem is not None:
            raise not_found(problem, "--wait to start anyway")
    if args.dev and not is_loopback(host):
        # Werkzeug's server has no request limits or worker pool: never on a public port.
        raise CliError(f"--dev serves on loopback only, not {host}", "drop --dev")
    if args.dev:
        return _run_dev(settings)
    argv_gunicorn = [sys.executable, "-m", "gunicorn", "-c", str(CONF)]
    sys.stdout.flush()
    sys.stderr.flush()
    # exec, not a child: gunicorn's master gets the signals (SIGTERM from Kubernetes) directly.
    os.execv(sys.executable, argv_gunicorn)  # noqa: S606  (fixed argv, no shell)
    return 0  # pragma: no cover  (execv does not return)


def _run_dev(settings: RecommenderSettings) -> int:
    from services.common.logging import configure_logging
    from services.recommender.app import create_app, runtime_of

    configure_logging(settings.log_level, settings.log_json)
    app = create_app(settings)
    runtime_of(app).start()
    host, port = split_bind(settings.bind)
    try:
        app.run(host=host, port=port, threaded=True)
    finally:
        runtime_of(app).stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
