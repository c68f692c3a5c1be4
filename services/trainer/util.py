"""Small helpers shared by the trainer's stages: logging set-up, progress bars, provenance."""

from __future__ import annotations

import json
import logging
import os
import resource
import subprocess
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from services.common.logging import configure_logging

T = TypeVar("T")
log = logging.getLogger("marquee.trainer")
ROOT = Path(__file__).resolve().parents[2]


def interactive() -> bool:
    """True when stderr is a terminal: progress bars and plain-text logs then."""
    return sys.stderr.isatty()


def setup_logging(level: str = "INFO", log_format: str = "auto") -> None:
    """JSON lines for jobs and pipelines, plain text on a terminal."""
    as_json = log_format == "json" or (log_format == "auto" and not interactive())
    configure_logging(level, json=as_json)


def progress(it: Iterable[T], desc: str, total: int | None = None) -> Iterator[T]:
    """A tqdm bar on a terminal, the bare iterable otherwise (JSON logs say enough)."""
    yield from tqdm(it, desc=desc, total=total, disable=not interactive(), leave=False)


def peak_rss_bytes() -> int:
    """This process's peak resident set size so far."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def git_sha(override: str = "") -> str:
    """The code's git commit (with ``-dirty`` for uncommitted changes), or ``unknown``."""
    if override:
        return override
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT, timeout=10
        ).stdout.strip()
        if not sha:
            return "unknown"
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "services"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=10,
        ).stdout.strip()
        return f"{sha}-dirty" if dirty else sha
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def write_json(path: Path, doc: Any) -> None:
    """Write JSON atomically (a reader never sees half a metrics file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=True, default=_plain) + "\n")
    os.replace(tmp, path)


def _plain(obj: Any) -> Any:
    """JSON for numpy scalars."""
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


@contextmanager
def limit_blas_threads(n: int = 1) -> Iterator[None]:
    """Cap BLAS threads: implicit's ALS is slower (and warns) when BLAS also spawns threads."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=n, user_api="blas"):
        yield


def unique_ints(values: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """``np.unique(values)`` (sorted distinct values) by one sort."""
    # NumPy 2.3's hash-based np.unique is ~20x slower on the millions of (user, movie) keys of
    # a 1M-user world (measured: 57 s against 2.8 s for 6M keys)
    s = np.sort(values)
    if len(s) < 2:
        return s
    keep = np.empty(len(s), bool)
    keep[0] = True
    np.not_equal(s[1:], s[:-1], out=keep[1:])
    out: npt.NDArray[Any] = s[keep]
    return out


def extreme_per_key(
    keys: npt.NDArray[np.int64], times: npt.NDArray[np.int64], latest: bool
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Sorted distinct ``keys`` and each one's latest (else earliest) time."""
    # one argsort and a reduceat: a two-key lexsort of millions of rows costs several times more
    if len(keys) == 0:
        return keys[:0], times[:0]
    order = np.argsort(keys, kind="stable")
    k = keys[order]
    starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
    reduce = np.maximum if latest else np.minimum
    return k[starts], reduce.reduceat(times[order], starts)
