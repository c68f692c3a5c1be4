"""Prometheus helpers that work in one process and under gunicorn's multiprocess mode.

Under gunicorn each worker is a process of its own, so counters are written to files in
``PROMETHEUS_MULTIPROC_DIR`` and ``/metrics`` aggregates them; without that variable the
default in-process registry is used.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_enabled() -> bool:
    """True when metrics are shared through files between worker processes."""
    return bool(os.environ.get(MULTIPROC_ENV))


def exposition(registry: CollectorRegistry | None = None) -> tuple[bytes, str]:
    """Return (body, content type) for ``/metrics``: aggregated across workers when multiprocess."""
    if registry is None and multiprocess_enabled():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    if registry is None:
        from prometheus_client import REGISTRY

        registry = REGISTRY
    return generate_latest(registry), CONTENT_TYPE_LATEST


def prepare_multiproc_dir(path: str | os.PathLike[str]) -> Path:
    """Empty and create the multiprocess directory; call once in the gunicorn master at start."""
    p = Path(path)
    if p.exists():
        shutil.rmtree(p)
    p.mkdir(parents=True)
    os.environ[MULTIPROC_ENV] = str(p)
    return p


def mark_worker_dead(pid: int) -> None:
    """gunicorn ``child_exit`` hook: drop a dead worker's live gauges from the aggregate."""
    if multiprocess_enabled():
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
