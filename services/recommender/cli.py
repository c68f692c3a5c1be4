"""``marquee serve``: run the recommendation server under gunicorn (or one dev process).

Options override the ``MARQUEE_RECOMMENDER_*`` environment, which gunicorn's config reads.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pydantic import ValidationError

from services.recommender.settings import RecommenderSettings

CONF = Path(__file__).resolve().parent / "gunicorn_conf.py"
_OVERRIDES = {
    "registry": "REGISTRY_ROOT",
    "model": "MODEL_NAME",
    "ref": "MODEL_REF",
    "bind": "BIND",
    "workers": "WORKERS",
    "threads": "THREADS",
    "users_api": "USERS_API_URL",
    "poll_interval": "POLL_INTERVAL_S",
    "metrics_dir": "METRICS_DIR",
}


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="marquee serve", description=__doc__)
    ap.add_argument("--registry", help="model registry root (MARQUEE_RECOMMENDER_REGISTRY_ROOT)")
    ap.add_argument("--model", help="model name in the registry (MARQUEE_RECOMMENDER_MODEL_NAME)")
    ap.add_argument("--ref", help="channel (stable/canary) or pinned version to serve")
    ap.add_argument("--bind", help="host:port to listen on (default 0.0.0.0:8082)")
    ap.add_argument("--workers", type=int, help="gunicorn worker processes")
    ap.add_argument("--threads", type=int, help="threads per worker")
    ap.add_argument("--users-api", help="base URL of the user API for cold-start segments")
    ap.add_argument("--poll-interval", type=float, help="seconds between channel pointer checks")
    ap.add_argument("--metrics-dir", help="prometheus multiprocess folder")
    ap.add_argument(
        "--dev", action="store_true", help="one process with Flask's server, for local debugging"
    )
    return ap


def main(argv: list[str]) -> int:
    """Validate settings, then exec gunicorn with the repo's config (or run ``--dev``)."""
    args = _parser().parse_args(argv)
    for attr, env in _OVERRIDES.items():
        value = getattr(args, attr)
        if value is not None:
            os.environ[f"MARQUEE_RECOMMENDER_{env}"] = str(value)
    try:
        settings = RecommenderSettings()  # required fields come from env
    except ValidationError as exc:
        print(f"marquee serve: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
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
    host, _, port = settings.bind.rpartition(":")
    try:
        app.run(host=host or "127.0.0.1", port=int(port), threaded=True)
    finally:
        runtime_of(app).stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
