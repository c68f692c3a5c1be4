"""Prometheus helpers that work in one process and under gunicorn's multiprocess mode.

Under gunicorn each worker is a process of its own, so counters are written to files in
``PROMETHEUS_MULTIPROC_DIR`` and ``/metrics`` aggregates them; without that variable the
default in-process registry is used.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path
from typing import Any

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


class MetricsDirInUseError(RuntimeError):
    """The multiprocess folder belongs to another live server; the message names it."""


# Open lock files of the folders this process owns, by folder: the lock lasts while they stay
# open, i.e. until the process exits (a crash frees it too).
_HELD: dict[Path, int] = {}
LOCK_FILE = ".lock"


def prepare_multiproc_dir(path: str | os.PathLike[str]) -> Path:
    """Claim the multiprocess folder for this server and empty it; call once in the master.

    Two servers writing one folder would sum (and wipe) each other's counters, so the folder
    is locked (``flock`` on ``<path>/.lock``, held until this process exits) before anything in
    it is touched; MetricsDirInUseError when another live process holds it.
    """
    p = Path(path).resolve()
    if p not in _HELD:
        p.mkdir(parents=True, exist_ok=True)
        fd = os.open(p / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise MetricsDirInUseError(
                f"metrics folder {p} is in use by a running server (pid {owner}); stop it or "
                "give this one a folder of its own"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _HELD[p] = fd
        # Only now, owning the folder, drop what a previous (dead) server left behind.
        for child in p.iterdir():
            if child.name == LOCK_FILE:
                continue
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    os.environ[MULTIPROC_ENV] = str(p)
    return p


def mark_worker_dead(pid: int) -> None:
    """gunicorn ``child_exit`` hook: drop a dead worker's live gauges from the aggregate."""
    if multiprocess_enabled():
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


class BoundChildren:
    """``metric.labels(*values)``, memoized for a serving path: its label sets are few (arms,
    outcomes, model versions), and ``labels()`` validates and takes a lock on every call.

    Past ``limit`` entries the memo starts over, so a long-lived process that sees many label
    sets (model versions over days) keeps only the recent ones bound.
    """

    def __init__(self, limit: int = 256) -> None:
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self._limit = limit

    def __call__(self, metric: Any, *labels: str) -> Any:
        """The child of ``metric`` for ``labels``."""
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            if len(self._children) >= self._limit:
                self._children.clear()
            child = self._children[key] = metric.labels(*labels)
        return child
