"""gunicorn configuration of the recommender, driven by ``RecommenderSettings`` (env).

    python -m gunicorn -c services/recommender/gunicorn_conf.py   # what ``marquee serve`` runs

Sizing: gthread workers (one per core) with a few threads each keep connections alive and
overlap I/O; scoring is sub-millisecond, so more threads would only add GIL contention.
With ``preload`` the master loads the model once and workers share its pages copy-on-write;
threads do not survive fork, so each worker starts its own model watcher in post_worker_init.
"""

from __future__ import annotations

import os
import sys

from services.common.runtime import pin_blas_threads

# BLAS threads would fight the workers for the same cores; one matrix-vector product per
# request is fastest single-threaded.  Must be set before numpy is imported.
pin_blas_threads()

from services.recommender.settings import RecommenderSettings  # noqa: E402

_settings = RecommenderSettings()  # required fields come from env
_metrics_dir = _settings.metrics_dir.resolve()
# prometheus_client picks its multiprocess mode when imported, so the folder and the variable
# must exist before the app is imported.  A HUP reload re-reads this file in the same master:
# the marker keeps it from wiping the live workers' files.
if os.environ.get("MARQUEE_RECOMMENDER_METRICS_PREPARED") != str(os.getpid()):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(_metrics_dir)  # before prometheus_client loads
    from services.common.metrics import MetricsDirInUseError, prepare_multiproc_dir
    from services.common.runtime import bind_problem

    # A server that cannot serve must leave shared state alone: the port is checked first,
    # and the metrics folder is locked, never emptied under a live server.
    _problem = bind_problem(_settings.bind)
    if _problem is not None:
        sys.stderr.write(f"marquee serve: {_problem}\n")
        sys.exit(1)
    try:
        prepare_multiproc_dir(_metrics_dir)
    except MetricsDirInUseError as exc:
        sys.stderr.write(f"marquee serve: {exc} (--metrics-dir)\n")
        sys.exit(1)
    os.environ["MARQUEE_RECOMMENDER_METRICS_PREPARED"] = str(os.getpid())

from services.common.logging import configure_logging  # noqa: E402
from services.common.runtime import gunicorn_worker_hooks  # noqa: E402

configure_logging(_settings.log_level, _settings.log_json)
if _settings.log_json:
    # gunicorn re-configures logging from this dict: keep its own records JSON too, and keep the
    # root logger (the app's access log) on the same JSON handler.
    logconfig_dict = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "json": {
                "()": "pythonjsonlogger.json.JsonFormatter",
                "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s",
                "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
                "timestamp": False,
            }
        },
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"level": _settings.log_level, "handlers": ["stderr"]},
        "loggers": {
            "gunicorn.error": {"level": _settings.log_level, "handlers": [], "propagate": True},
            "gunicorn.access": {"level": "WARNING", "handlers": [], "propagate": True},
        },
    }

wsgi_app = "services.recommender.app:create_app()"
bind = [_settings.bind]
workers = _settings.workers
worker_class = "gthread"
threads = _settings.threads
preload_app = _settings.preload
graceful_timeout = _settings.graceful_timeout_s
timeout = 30  # a worker silent this long is stuck (scoring takes a millisecond)
keepalive = 5  # the streaming client and the router reuse connections
backlog = 2048
accesslog = None  # the app writes its own JSON access log with model provenance
errorlog = "-"
loglevel = _settings.log_level.lower()
proc_name = "marquee-recommender"


# Start and stop each worker's background work; drop dead workers' gauges (services.common).
post_worker_init, worker_exit, child_exit = gunicorn_worker_hooks("services.recommender.app")
