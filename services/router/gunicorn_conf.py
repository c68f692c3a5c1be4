"""gunicorn configuration of the router, driven by ``RouterSettings`` (env).

    python -m gunicorn -c services/router/gunicorn_conf.py   # what ``marquee route serve`` runs

aiohttp workers (about one per core), an event loop each: a request mostly waits on its
upstream, and a loop overlaps any number of those waits without a thread per request.
Threads do not survive fork: each worker starts its own config watcher and exposure sender
in post_worker_init.
"""

from __future__ import annotations

import os

from services.router.settings import RouterSettings

_settings = RouterSettings()  # required fields come from env
_metrics_dir = _settings.metrics_dir.resolve()
# prometheus_client picks its multiprocess mode when imported, so the folder and the variable
# must exist before the app is imported.  A HUP reload re-reads this file in the same master:
# the marker keeps it from wiping the live workers' files.
if os.environ.get("MARQUEE_ROUTER_METRICS_PREPARED") != str(os.getpid()):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(_metrics_dir)
    from services.common.metrics import prepare_multiproc_dir

    prepare_multiproc_dir(_metrics_dir)
    os.environ["MARQUEE_ROUTER_METRICS_PREPARED"] = str(os.getpid())

from services.common.logging import configure_logging  # noqa: E402
from services.common.runtime import gunicorn_worker_hooks  # noqa: E402

configure_logging(_settings.log_level, _settings.log_json)

wsgi_app = "services.router.app:create_app()"
bind = [_settings.bind]
workers = _settings.workers
worker_class = "aiohttp.GunicornWebWorker"
preload_app = True  # a bad experiment file fails once, in the master, before any worker
graceful_timeout = _settings.graceful_timeout_s
timeout = 30
keepalive = 5  # the streaming client reuses connections
backlog = 2048
accesslog = None  # the app writes its own JSON access log with the arm and fallback
errorlog = "-"
loglevel = _settings.log_level.lower()
proc_name = "marquee-router"


# Start and stop each worker's background work; drop dead workers' gauges (services.common).
post_worker_init, worker_exit, child_exit = gunicorn_worker_hooks("services.router.app")
